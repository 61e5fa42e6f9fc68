"""ONNX Runtime backend for the MiniLM embedder: export once with torch, then run with no torch at all.

Layout of an export (one directory per source model, named by a hash of the weights)::

    <cache root>/all-MiniLM-L6-v2-<16 hex of sha256(weights, config, format version)>/
        model.onnx     the BERT encoder: input_ids/attention_mask/token_type_ids -> last_hidden_state
        manifest.json  format name + version, source hash, sha256 and size of model.onnx, opset, torch version

Durability rule: an export is built in a private temporary directory, every file is fsynced, the directory is
renamed into place (atomic on POSIX, and it fails instead of overwriting when another process won the race)
and the parent directory is fsynced. A reader therefore sees either no export or a complete one. On load the
manifest's checksum of ``model.onnx`` is verified; a corrupt export is discarded and rebuilt.

Pooling and normalisation happen in numpy, exactly as sentence-transformers does them for this model (mean of
the token embeddings under the attention mask, then L2): the ONNX graph holds only the transformer, which is
the part torch would otherwise be needed for. Every fresh export is checked against torch before it is
published (cosine >= :data:`CONGRUENCE_MIN_COSINE` on a set of probe sentences).

Why this export is ours and not a library's (checked for issue #15, with sentence-transformers 6.3.0,
transformers 5.24.0, torch 2.13.0): sentence-transformers' ``backend="onnx"`` exports through its ``onnx``
extra, ``optimum-onnx[onnxruntime]``, and every release of that (0.0.1 to 0.1.0) requires
``transformers<4.58``, while sentence-transformers 6.x requires ``transformers>=5``: pip cannot install the
two together (``pip install --dry-run "optimum-onnx[onnxruntime]" torch==2.13.0 transformers==5.24.0`` in a
scratch venv: ResolutionImpossible). optimum itself no longer exports (2.x moved the exporters into
optimum-onnx), and optimum 1.27's ``exporters`` extra requires ``transformers<4.54``. So neither library can
produce the graph without downgrading transformers below what sentence-transformers needs; the identity and
speed comparison (max abs diff < 1e-5 against torch, sentences/s against our 223/s) could not be run. Revisit
when optimum-onnx supports transformers 5. The run-time half stays ours either way: ONNX Runtime, tokenizers
and numpy pooling, with no torch import.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingExtraError, StorageError
from ..storage._atomic import fsync_dir, fsync_file
from ._model_files import MINILM_DIM, MINILM_MODEL_ID, force_offline

__all__ = ["CONGRUENCE_MIN_COSINE", "OnnxBackend", "default_onnx_cache_dir", "onnx_runtime_available"]

log = logging.getLogger(__name__)

_FORMAT = "embeddix-onnx-export"
# Bump when the graph's inputs/outputs or the export recipe change: it is hashed into the directory name, so a
# new version exports afresh next to the old one instead of reading a graph it does not understand.
_FORMAT_VERSION = 1
_OPSET = 17
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_OUTPUT = "last_hidden_state"
CONGRUENCE_MIN_COSINE = 0.9999
# Different lengths, padding inside a batch, punctuation, accents, non-Latin script and truncation: the
# shapes that would expose a graph traced with a baked-in constant.
_PROBES = (
    "The cat sits on the mat.",
    "hello",
    "Embeddix keeps an agent's memories: naïve café, 東京, emoji 🙂, numbers 3.14159 and URLs example.org/x",
    "long " * 400,
)
_EXPORT_LOCK = threading.Lock()


def default_onnx_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/embeddix/onnx``, falling back to ``~/.cache/embeddix/onnx``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "embeddix" / "onnx"


def onnx_runtime_available() -> bool:
    """Whether onnxruntime and tokenizers, the run-time needs of this backend, are importable."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "tokenizers"))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _source_fingerprint(model_path: Path) -> str:
    """Hash of everything the graph depends on: weights, architecture config and the export recipe version."""
    digest = hashlib.sha256(f"{_FORMAT}/{_FORMAT_VERSION}/opset{_OPSET}\n".encode())
    digest.update((model_path / "config.json").read_bytes())
    digest.update(_sha256_file(model_path / "model.safetensors").encode())
    return digest.hexdigest()


def _max_seq_length(model_path: Path) -> int:
    # sentence-transformers truncates at this length (256 for this model), not at the tokenizer's 512/128.
    config = model_path / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text(encoding="utf-8")).get("max_seq_length", 256))
    return 256


def _load_tokenizer(model_path: Path, max_seq_length: int) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
    padding = tokenizer.padding or {}
    # tokenizer.json pads every input to a fixed 128 tokens; pad to the longest text of the batch instead.
    tokenizer.no_padding()
    tokenizer.enable_padding(
        pad_id=int(padding.get("pad_id", 0)),
        pad_token=str(padding.get("pad_token", "[PAD]")),
        pad_type_id=int(padding.get("pad_type_id", 0)),
    )
    tokenizer.enable_truncation(max_length=max_seq_length)
    return tokenizer


def _encode_inputs(tokenizer: Any, texts: list[str]) -> dict[str, np.ndarray]:
    encodings = tokenizer.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


def _mean_pool_normalize(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """sentence-transformers' Pooling(mean) followed by Normalize, in numpy."""
    mask = attention_mask[:, :, None].astype(np.float32)
    summed = (hidden.astype(np.float32) * mask).sum(axis=1)
    pooled = summed / np.clip(mask.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return pooled / np.clip(norms, 1e-12, None)


@contextlib.contextmanager
def _legacy_exporter_without_onnx() -> Iterator[None]:
    """Let torch's TorchScript exporter run when the ``onnx`` package is not installed.

    The exporter builds the ModelProto bytes itself, then always round-trips them through the ``onnx`` package
    only to append onnxscript custom functions. This graph has none (no custom opsets), so the step is the
    identity; without ``onnx`` installed it fails instead. When ``onnx`` is missing we swap that private step
    for the identity during the export and restore it afterwards. If torch moves the function, nothing is
    patched and the export reports its own error (the ``auto`` backend then falls back to torch).
    """
    if importlib.util.find_spec("onnx") is not None:
        yield
        return
    try:
        from torch.onnx._internal.torchscript_exporter import onnx_proto_utils
    except ImportError:
        yield
        return
    original = getattr(onnx_proto_utils, "_add_onnxscript_fn", None)
    if original is None:
        yield
        return

    def passthrough(model_bytes: bytes, custom_opsets: Any) -> bytes:
        if custom_opsets:  # pragma: no cover - we never pass custom opsets
            return original(model_bytes, custom_opsets)  # type: ignore[no-any-return]
        return model_bytes

    onnx_proto_utils._add_onnxscript_fn = passthrough
    try:
        yield
    finally:
        onnx_proto_utils._add_onnxscript_fn = original


def _export_graph(model_path: Path, target: Path) -> None:
    """Trace the BERT encoder with torch and write it as ONNX to ``target``."""
    force_offline()
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise MissingExtraError.for_extra("exporting MiniLM to ONNX", "embed", exc) from exc

    # Eager attention: the trace must contain the plain masked softmax, not an SDPA fast path whose selection
    # depends on the example input (e.g. "no padding, skip the mask").
    model = AutoModel.from_pretrained(str(model_path), local_files_only=True, attn_implementation="eager")
    model.eval()

    class _Encoder(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    # The example batch has padding so that the traced graph applies the attention mask.
    input_ids = torch.tensor([[101, 7592, 2088, 102, 0, 0], [101, 1037, 4937, 2003, 3564, 102]])
    example = (input_ids, (input_ids != 0).long(), torch.zeros_like(input_ids))
    dynamic = {name: {0: "batch", 1: "sequence"} for name in (*_INPUTS, _OUTPUT)}
    with torch.no_grad(), warnings.catch_warnings(), _legacy_exporter_without_onnx():
        # The TorchScript exporter warns that it is deprecated and that traced Python conditions became
        # constants; the congruence check after the export is what guards against the latter.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Encoder(model),
            example,
            str(target),
            dynamo=False,
            input_names=list(_INPUTS),
            output_names=[_OUTPUT],
            dynamic_axes=dynamic,
            opset_version=_OPSET,
            do_constant_folding=True,
        )


def _torch_reference(model_path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_path), local_files_only=True)
    model.eval()
    with torch.no_grad():
        hidden = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).last_hidden_state
    return _mean_pool_normalize(hidden.numpy(), inputs["attention_mask"])


def _new_session(onnx_path: Path, num_threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's warnings are about graph fusions we cannot act on
    # No busy-waiting between calls: a spinning pool thread keeps a core busy after every embedding,
    # which on a small machine is the core the searches and the caller need (measured over MCP stdio on
    # 2 cores: recall p95 21-23 ms without spinning against 38-47 ms with it, same threads).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest if the export in ``directory`` is complete and intact, else ``None``."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        onnx_path = directory / "model.onnx"
        if (
            manifest.get("format") != _FORMAT
            or manifest.get("format_version") != _FORMAT_VERSION
            or onnx_path.stat().st_size != manifest.get("onnx_size")
            or _sha256_file(onnx_path) != manifest.get("onnx_sha256")
        ):
            return None
    except (OSError, ValueError):
        return None
    return dict(manifest)


def _build_export(model_path: Path, cache_root: Path, final: Path, source_sha: str) -> None:
    """Export, verify against torch, and publish ``final`` atomically."""
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=cache_root))
    try:
        onnx_path = staging / "model.onnx"
        _export_graph(model_path, onnx_path)

        max_len = _max_seq_length(model_path)
        inputs = _encode_inputs(_load_tokenizer(model_path, max_len), list(_PROBES))
        session = _new_session(onnx_path, num_threads=None)
        got = _mean_pool_normalize(session.run([_OUTPUT], inputs)[0], inputs["attention_mask"])
        want = _torch_reference(model_path, inputs)
        cosines = (got * want).sum(axis=1)
        if got.shape != (len(_PROBES), MINILM_DIM) or float(cosines.min()) < CONGRUENCE_MIN_COSINE:
            raise StorageError(
                f"the ONNX export of {MINILM_MODEL_ID} disagrees with torch (min cosine "
                f"{float(cosines.min()):.6f}, need >= {CONGRUENCE_MIN_COSINE}); not publishing it"
            )

        import torch

        manifest = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "model_id": MINILM_MODEL_ID,
            "source_sha256": source_sha,
            "onnx_sha256": _sha256_file(onnx_path),
            "onnx_size": onnx_path.stat().st_size,
            "opset": _OPSET,
            "inputs": list(_INPUTS),
            "output": _OUTPUT,
            "max_seq_length": max_len,
            "torch_version": torch.__version__,
            "min_probe_cosine": float(cosines.min()),
        }
        with (staging / "manifest.json").open("w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        fsync_file(onnx_path)
        fsync_dir(staging)
        try:
            os.rename(staging, final)
        except OSError as exc:
            # Another process published first; its export is equivalent, so keep it and drop ours.
            if _read_manifest(final) is None:
                raise StorageError(f"could not publish the ONNX export at {final}: {exc}") from exc
            return
        fsync_dir(cache_root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_export(model_path: Path, cache_root: Path) -> Path:
    """Return the directory of a verified export of ``model_path``, exporting it first if needed.

    Raises:
        MissingExtraError: No usable export exists and torch/transformers are not installed to make one.
        StorageError: The export does not reproduce torch's vectors.
    """
    source_sha = _source_fingerprint(model_path)
    final = cache_root / f"{MINILM_MODEL_ID.rsplit('/', 1)[-1]}-{source_sha[:16]}"
    with _EXPORT_LOCK:
        if _read_manifest(final) is not None:
            return final
        if final.exists():
            log.warning("discarding the incomplete or corrupt ONNX export at %s", final)
            trash = final.with_name(f".{final.name}.{uuid.uuid4().hex}.trash")
            with contextlib.suppress(OSError):
                os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        log.info("exporting %s to ONNX at %s (one-off)", MINILM_MODEL_ID, final)
        _build_export(model_path, cache_root, final, source_sha)
        if _read_manifest(final) is None:
            raise StorageError(f"the ONNX export at {final} could not be verified after writing it")
        return final


class OnnxBackend:
    """Runs the exported encoder with onnxruntime; tokenizes with ``tokenizers``; pools in numpy.

    Not thread-safe by itself: :class:`MiniLMEmbedder` serialises calls.
    """

    name = "onnx"

    def __init__(
        self, model_path: Path, cache_root: Path, *, batch_size: int, num_threads: int | None = None
    ) -> None:
        missing = [name for name in ("onnxruntime", "tokenizers") if importlib.util.find_spec(name) is None]
        if missing:
            raise MissingExtraError.for_extra(
                f"the ONNX embedding backend ({', '.join(missing)} missing)", "embed"
            )
        export_dir = ensure_export(model_path, cache_root)
        self.export_dir = export_dir
        self._batch_size = batch_size
        self._tokenizer = _load_tokenizer(model_path, _max_seq_length(model_path))
        self._session = _new_session(export_dir / "model.onnx", num_threads)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts`` into unit vectors, ``batch_size`` at a time."""
        out = np.empty((len(texts), MINILM_DIM), dtype=np.float32)
        # Longest first, as sentence-transformers does: batches of similar length waste little on padding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), self._batch_size):
            idx = order[start : start + self._batch_size]
            inputs = _encode_inputs(self._tokenizer, [texts[i] for i in idx])
            hidden = self._session.run([_OUTPUT], inputs)[0]
            out[idx] = _mean_pool_normalize(hidden, inputs["attention_mask"])
        return out

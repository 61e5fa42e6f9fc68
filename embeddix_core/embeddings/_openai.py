"""OpenAIEmbedder: any OpenAI-compatible ``POST {base_url}/embeddings`` endpoint as an :class:`Embedder`.

OpenAI itself, and the servers that copy its embeddings API (vLLM, Ollama, llama.cpp, LM Studio, LiteLLM,
text-embeddings-inference, Azure's OpenAI-compatible route, ...). The standard library's ``urllib`` does the
HTTP, so the core gains no dependency for it.

Identity: :attr:`OpenAIEmbedder.model_id` is ``"openai:<model>@<base_url>"``, e.g.
``"openai:text-embedding-3-small@https://api.openai.com/v1"``. The base URL is part of it because two
servers can serve different weights under one model name (a local ``nomic-embed-text`` is not a hosted one);
a collection built through one endpoint is therefore refused through another rather than silently mixed.
:func:`~embeddix_core.embeddings.get_embedder` maps such an id back to an embedder.

The API key is a secret: it is sent in the ``Authorization`` header only, never appears in ``repr``,
``model_id``, log lines or error messages, and a base URL carrying credentials (``https://user:pw@host``)
is refused for the same reason (the URL is stored on disk as part of ``model_id``).
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DimensionMismatchError, EmbeddingServiceError, InvalidArgumentError
from ..metrics import timed_embed
from ._protocol import as_matrix, check_text, check_texts

__all__ = ["DEFAULT_OPENAI_BASE_URL", "EmbeddingServiceError", "OpenAIEmbedder"]

log = logging.getLogger(__name__)

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
# Statuses worth a retry: rate limited, or a server/proxy that may recover (OpenAI's own client retries
# the same set). Everything else (400 bad input, 401/403 key, 404 model) fails the same way every time.
_RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
# An error body is quoted in the message to say what the server objected to, but never at length: it is
# untrusted text and ends up in logs and in MCP tool errors.
_MAX_BODY_QUOTE = 300
_MAX_RETRY_AFTER = 20.0


class OpenAIEmbedder:
    """Embeds through an OpenAI-compatible ``/embeddings`` endpoint.

    Texts are sent in batches of ``batch_size`` (``{"model": model, "input": [...]}``); rows come back in
    input order (sorted by the reply's ``index``). Every reply is checked: one vector per input, all of the
    same dimension, finite numbers. When ``dim`` is not given, the first request fixes it (and :attr:`dim`
    makes one small request if asked before any embedding), and every later reply must match it.

    Rate limits and transient server errors (429, 5xx, timeouts, refused connections) are retried up to
    ``max_retries`` times with exponential backoff (honouring ``Retry-After`` up to 20 s); other statuses
    fail at once.

    Thread-safe: requests are independent; a lock only guards fixing the dimension.

    Args:
        model: The model name the endpoint knows, e.g. ``"text-embedding-3-small"``.
        base_url: The API root; ``/embeddings`` is appended. Default: OpenAI's.
        api_key: Sent as ``Authorization: Bearer <key>``; None sends no header (local servers).
        dim: The dimension the model returns, if known; a reply of another dimension is an error.
        batch_size: Texts per request (keyword-only); OpenAI accepts up to 2048.
        timeout: Seconds to wait for one request (keyword-only).
        max_retries: Retries of a failed request that may succeed later (keyword-only).

    Raises:
        InvalidArgumentError: An argument is empty, out of range, or the URL is not ``http(s)`` or carries
            credentials, a query or a fragment.
    """

    def __init__(
        self,
        model: str,
        base_url: str = DEFAULT_OPENAI_BASE_URL,
        api_key: str | None = None,
        dim: int | None = None,
        *,
        batch_size: int = 256,
        timeout: float = 60.0,
        max_retries: int = 2,
    ) -> None:
        if not isinstance(model, str) or not model.strip() or model != model.strip():
            raise InvalidArgumentError(
                f"model must be a non-empty name without surrounding spaces, got {model!r}"
            )
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise InvalidArgumentError(f"dim must be a positive integer or None, got {dim!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 2048:
            raise InvalidArgumentError(f"batch_size must be an integer in [1, 2048], got {batch_size!r}")
        if not isinstance(timeout, int | float) or not timeout > 0:
            raise InvalidArgumentError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or not 0 <= max_retries <= 10:
            raise InvalidArgumentError(f"max_retries must be an integer in [0, 10], got {max_retries!r}")
        if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
            # The key itself is never quoted, even when it is wrong.
            raise InvalidArgumentError("api_key must be a non-empty string or None")
        self._model = model
        self._base_url = normalize_base_url(base_url)
        self._url = self._base_url + "/embeddings"
        self._api_key = api_key
        self._dim = dim
        self._batch_size = batch_size
        self._timeout = float(timeout)
        self._max_retries = max_retries
        self._dim_lock = threading.Lock()

    @property
    def model_id(self) -> str:
        """``"openai:<model>@<base_url>"``."""
        return f"openai:{self._model}@{self._base_url}"

    @property
    def model(self) -> str:
        """The model name sent to the endpoint."""
        return self._model

    @property
    def base_url(self) -> str:
        """The API root, without a trailing slash."""
        return self._base_url

    @property
    def dim(self) -> int:
        """The vector length: as given, else learned from the first reply (one request if none came yet).

        Raises:
            EmbeddingServiceError: The endpoint had to be asked and failed.
        """
        if self._dim is None:
            self.embed_documents(["dimension probe"])  # sets _dim through _accept_dim, or raises
        return self._dim if self._dim is not None else 0

    @timed_embed  # latency and texts per model (metrics.py)
    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a batch of texts; see :meth:`Embedder.embed_documents`.

        Args:
            texts: The texts, in order. May be empty (no request is made unless the dimension is still
                unknown).

        Returns:
            A C-contiguous float32 ``(len(texts), dim)`` array, as the endpoint returned it (OpenAI's vectors
            are unit length; other servers' may not be, which cosine collections do not mind).

        Raises:
            InvalidArgumentError: ``texts`` is a single string or holds a non-string.
            EmbeddingServiceError: The endpoint is unreachable, answered with an error status, or sent
                something that is not one embedding per input.
            DimensionMismatchError: The endpoint returned vectors of another dimension than ``dim`` (or
                than its own earlier replies).
        """
        items = check_texts(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [
            self._embed_batch(items[start : start + self._batch_size])
            for start in range(0, len(items), self._batch_size)
        ]
        matrix = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return as_matrix(matrix, len(items), self.dim, source=self.model_id)

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one text; see :meth:`Embedder.embed_query`.

        Raises:
            InvalidArgumentError: ``text`` is not a string.
            EmbeddingServiceError: See :meth:`embed_documents`.
            DimensionMismatchError: See :meth:`embed_documents`.
        """
        return self.embed_documents([check_text(text)])[0]

    # -- one request ----------------------------------------------------------------------------------------
    def _embed_batch(self, batch: list[str]) -> np.ndarray:
        reply = self._post({"model": self._model, "input": batch})
        rows = _parse_reply(reply, len(batch), self.model_id)
        width = {len(row) for row in rows}
        if len(width) != 1:
            raise DimensionMismatchError(
                f"{self.model_id} returned vectors of different lengths {sorted(width)} in one reply; "
                f"expected {self._dim or 'one length'} for every input"
            )
        self._accept_dim(width.pop())
        try:
            # A number beyond float32's range becomes inf here and is reported below with the others;
            # numpy's own RuntimeWarning would say less (and is an error under pytest -W error).
            with np.errstate(over="ignore", invalid="ignore"):
                matrix = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise EmbeddingServiceError(
                f"{self.model_id} returned an embedding that is not a list of numbers ({exc})"
            ) from exc
        if not np.isfinite(matrix).all():
            raise EmbeddingServiceError(
                f"{self.model_id} returned an embedding holding NaN, infinity or a number beyond float32; "
                f"expected finite numbers"
            )
        return matrix

    def _accept_dim(self, got: int) -> None:
        with self._dim_lock:
            if self._dim is None:
                self._dim = got
                return
        if got != self._dim:
            raise DimensionMismatchError(
                f"{self.model_id} returned {got}-d vectors, expected {self._dim}-d; the endpoint serves "
                f"another model than the one configured (check the model name, base URL and dimension)"
            )

    def _post(self, payload: dict[str, Any]) -> Any:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "embeddix",
        }
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key}"
        attempt = 0
        while True:
            request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self._timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as exc:
                error = self._status_error(exc)
                retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
                exc.close()
                if exc.code not in _RETRY_STATUSES or attempt >= self._max_retries:
                    raise error from None
            except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                error = EmbeddingServiceError(
                    f"could not reach the embedding endpoint {self._url} ({reason}); expected an "
                    f"OpenAI-compatible server there: check the base URL and that the server is running"
                )
                retry_after = None
                if attempt >= self._max_retries:
                    raise error from exc
            else:
                try:
                    return json.loads(raw)
                except ValueError as exc:
                    raise EmbeddingServiceError(
                        f"{self._url} answered with something that is not JSON ({_quote(raw)}); expected "
                        f'{{"data": [{{"embedding": [...]}}, ...]}}'
                    ) from exc
            delay = retry_after if retry_after is not None else 0.5 * 2**attempt
            attempt += 1
            log.warning(
                "embedding request failed (%s); retry %d of %d in %.1fs",
                error,
                attempt,
                self._max_retries,
                delay,
            )
            time.sleep(delay)

    def _status_error(self, exc: urllib.error.HTTPError) -> EmbeddingServiceError:
        try:
            raw = exc.read()
        except OSError:
            raw = b""
        detail = _error_detail(raw)
        hint = {
            401: "check the API key",
            403: "the API key may not use this model",
            404: f"check the base URL (…/v1) and that the server has model {self._model!r}",
            429: "rate limited; retry later or lower the batch size",
        }.get(exc.code, "see the server's log")
        return EmbeddingServiceError(
            f"the embedding endpoint {self._url} answered HTTP {exc.code} for model {self._model!r} "
            f"({detail}); expected 200 with embeddings: {hint}",
            status=exc.code,
        )

    def __repr__(self) -> str:
        key = "set" if self._api_key is not None else "none"
        return f"OpenAIEmbedder(model={self._model!r}, base_url={self._base_url!r}, api_key=<{key}>)"


def normalize_base_url(base_url: str) -> str:
    """Check an API root URL and return it without a trailing slash.

    Raises:
        InvalidArgumentError: Not an absolute ``http(s)`` URL, or it carries credentials, a query or a
            fragment.
    """
    if not isinstance(base_url, str) or not base_url.strip():
        raise InvalidArgumentError(f"base_url must be a non-empty URL, got {base_url!r}")
    url = base_url.strip().rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgumentError(
            f"base_url must be an absolute http(s) URL such as {DEFAULT_OPENAI_BASE_URL!r}, got {url!r}"
        )
    if parts.username is not None or parts.password is not None:
        # The URL becomes part of model_id, stored on disk and shown in messages: no secrets in it.
        raise InvalidArgumentError(
            "base_url must not carry credentials (user:password@host); pass the key as api_key instead"
        )
    if parts.query or parts.fragment:
        raise InvalidArgumentError(f"base_url must not have a query or fragment, got {url!r}")
    return url


def _parse_reply(reply: Any, n: int, source: str) -> list[Any]:
    """The embeddings of an OpenAI-style reply, in input order."""
    data = reply.get("data") if isinstance(reply, dict) else None
    if not isinstance(data, list) or not all(
        isinstance(item, dict) and isinstance(item.get("embedding"), list) for item in data
    ):
        raise EmbeddingServiceError(
            f'{source} replied without a list of embeddings; expected {{"data": [{{"embedding": [...], '
            f'"index": 0}}, ...]}}, got {_quote(json.dumps(reply)[:_MAX_BODY_QUOTE].encode())}'
        )
    if len(data) != n:
        raise EmbeddingServiceError(f"{source} returned {len(data)} embeddings for {n} inputs; expected {n}")
    # The API documents that "index" gives each embedding's input position; servers that omit it return
    # input order.
    indexes = [item.get("index", i) for i, item in enumerate(data)]
    if sorted(indexes) != list(range(n)):
        raise EmbeddingServiceError(
            f"{source} returned embedding indexes that are not 0..{n - 1}; "
            f"the reply cannot be matched to the inputs"
        )
    ordered: list[Any] = [None] * n
    for index, item in zip(indexes, data, strict=True):
        ordered[index] = item["embedding"]
    return ordered


def _error_detail(raw: bytes) -> str:
    """What an error body says: OpenAI's ``{"error": {"message": ...}}``, else the body, shortened."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        return _quote(raw) if raw else "no body"
    error = parsed.get("error") if isinstance(parsed, dict) else None
    message = error.get("message") if isinstance(error, dict) else error if isinstance(error, str) else None
    if isinstance(message, str) and message.strip():
        return _quote(message.encode())
    return _quote(raw)


def _quote(raw: bytes) -> str:
    text = " ".join(raw.decode("utf-8", "replace").split())
    return repr(text if len(text) <= _MAX_BODY_QUOTE else text[: _MAX_BODY_QUOTE - 1] + "…")


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff rather than parse clocks
    return min(seconds, _MAX_RETRY_AFTER) if math.isfinite(seconds) and seconds >= 0 else None

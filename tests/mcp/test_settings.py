"""Settings: sources and their order, token files, the loopback rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from embeddix_mcp import ConfigError, ServerSettings, build_http_app, load_tokens
from embeddix_mcp.settings import is_loopback

TOKEN = "t" * 32


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("EMBEDDIX_DATA", "EMBEDDIX_AGENT", "EMBEDDIX_EMBEDDER", "EMBEDDIX_CONFIG", "EMBEDDIX_HOST"):
        monkeypatch.delenv(var, raising=False)
    s = ServerSettings()
    assert (s.data, s.agent, s.embedder, s.transport, s.host) == (
        "./embeddix-data",
        "default",
        "minilm",
        "stdio",
        "127.0.0.1",
    )
    assert s.data_path == Path("./embeddix-data") and not s.in_memory
    assert ServerSettings(data=":memory:").data_path is None


def test_embed_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    from embeddix_core.embeddings import CachedEmbedder, HashEmbedder, MiniLMEmbedder
    from embeddix_mcp.state import make_embedder

    monkeypatch.delenv("EMBEDDIX_EMBED_THREADS", raising=False)
    assert ServerSettings().embed_threads is None
    for cores, auto in ((1, 1), (2, 1), (8, None)):  # unset: one thread on small machines
        monkeypatch.setattr("os.cpu_count", lambda c=cores: c)
        assert ServerSettings().onnx_threads == auto
    monkeypatch.setenv("EMBEDDIX_EMBED_THREADS", "0")
    assert ServerSettings().embed_threads == 0 and ServerSettings().onnx_threads is None  # the runtime's
    assert ServerSettings(embed_threads=3).onnx_threads == 3
    with pytest.raises(ValidationError):
        ServerSettings(embed_threads=-1)
    emb = make_embedder(ServerSettings(embed_threads=2))  # nothing loads until the first call
    assert isinstance(emb, CachedEmbedder) and isinstance(emb.embedder, MiniLMEmbedder)
    assert emb.embedder._num_threads == 2
    assert isinstance(make_embedder(ServerSettings(embedder="hash")), HashEmbedder)


def test_order_defaults_file_env_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "embeddix.toml"
    cfg.write_text('agent = "from-file"\nport = 9000\nembedder = "hash"\ndata = "/srv/file"\n')
    monkeypatch.setenv("EMBEDDIX_CONFIG", str(cfg))
    monkeypatch.setenv("EMBEDDIX_PORT", "9100")
    monkeypatch.setenv("EMBEDDIX_EMBEDDER", "MiniLM")
    monkeypatch.delenv("EMBEDDIX_AGENT", raising=False)
    monkeypatch.delenv("EMBEDDIX_DATA", raising=False)
    s = ServerSettings(data="/srv/arg")
    assert (s.agent, s.port, s.embedder, s.data) == ("from-file", 9100, "minilm", "/srv/arg")
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"agent": "json-agent"}))
    assert ServerSettings(config=js).agent == "json-agent"


def test_bad_configuration_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 'teal'\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        ServerSettings(config=bad)
    with pytest.raises(ConfigError, match="cannot read"):
        ServerSettings(config=tmp_path / "missing.toml")
    with pytest.raises(ValidationError, match="agent name"):
        ServerSettings(agent="a:b")
    with pytest.raises(ValidationError):
        ServerSettings(embedder="word2vec")


def test_token_file_forms(tmp_path: Path) -> None:
    single = tmp_path / "token"
    single.write_text(TOKEN + "\n")
    table = load_tokens(ServerSettings(agent="solo", token_file=single))
    assert table.agent_for(TOKEN) == "solo" and table.agent_for("x" * 32) is None
    mapping = tmp_path / "tokens.json"
    mapping.write_text(json.dumps({"a" * 20: "alice", "b" * 20: "bob"}))
    table = load_tokens(ServerSettings(token_file=mapping, token=TOKEN))
    assert (table.agent_for("a" * 20), table.agent_for("b" * 20), table.agent_for(TOKEN)) == (
        "alice",
        "bob",
        "default",
    )
    assert TOKEN not in repr(table) and "a" * 20 not in repr(table)
    short = tmp_path / "short"
    short.write_text("abc")
    with pytest.raises(ConfigError, match="at least 16"):
        load_tokens(ServerSettings(token_file=short))
    bad_agent = tmp_path / "bad.json"
    bad_agent.write_text(json.dumps({"c" * 20: "x:y"}))
    with pytest.raises(ConfigError, match="agent name"):
        load_tokens(ServerSettings(token_file=bad_agent))


def test_loopback_rule(tmp_path: Path) -> None:
    assert (
        is_loopback("127.0.0.1")
        and is_loopback("::1")
        and is_loopback("localhost")
        and is_loopback("127.0.0.2")
    )
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10") and not is_loopback("example.com")
    with pytest.raises(ConfigError, match="without authentication"):
        build_http_app(ServerSettings(host="0.0.0.0", data=str(tmp_path), embedder="hash"))
    assert build_http_app(ServerSettings(host="0.0.0.0", data=str(tmp_path), embedder="hash", token=TOKEN))
    # Loopback without a token is refused too; serving without authentication takes an explicit no_auth.
    with pytest.raises(ConfigError, match="--no-auth"):
        build_http_app(ServerSettings(host="127.0.0.1", data=str(tmp_path), embedder="hash"))
    assert build_http_app(ServerSettings(host="127.0.0.1", data=str(tmp_path), embedder="hash", no_auth=True))

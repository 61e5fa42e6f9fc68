"""Config files (issue #15): read by pydantic-settings' TOML/JSON sources, below the environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embeddix_core import EmbeddixError, EmbeddixSettings
from embeddix_core.config import ConfigFileError, Durability
from embeddix_mcp import ConfigError, ServerSettings
from embeddix_mcp.cli import main


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CONFIG", "HNSW_M", "EF_SEARCH", "DURABILITY", "AGENT", "PORT", "DATA"):
        monkeypatch.delenv(f"EMBEDDIX_{name}", raising=False)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_engine_reads_toml_and_json_below_env_and_arguments(
    suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {"hnsw_m": 8, "ef_search": 40, "durability": "normal"}
    text = "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items()) if suffix == ".toml" else None
    cfg = _write(tmp_path / f"embeddix{suffix}", text or json.dumps(values))
    s = EmbeddixSettings(config=cfg)
    assert (s.hnsw_m, s.ef_search, s.durability) == (8, 40, Durability.NORMAL)
    assert s.ef_construction == EmbeddixSettings().ef_construction  # not in the file: the default
    monkeypatch.setenv("EMBEDDIX_CONFIG", str(cfg))
    monkeypatch.setenv("EMBEDDIX_EF_SEARCH", "50")
    s = EmbeddixSettings(hnsw_m=4)
    # arguments > environment > file > defaults
    assert (s.hnsw_m, s.ef_search, s.durability) == (4, 50, Durability.NORMAL)


def test_engine_leaves_the_server_keys_of_a_shared_file_alone(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "shared.toml", 'agent = "claude"\nport = 9000\ndurability = "normal"\n')
    assert EmbeddixSettings(config=cfg).durability is Durability.NORMAL


def test_engine_without_a_file_uses_defaults() -> None:
    assert EmbeddixSettings().config is None
    assert EmbeddixSettings().durability is Durability.FULL


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("missing.toml", None, "cannot read the config file .*no such file"),
        ("bad.toml", "hnsw_m = ", "is not valid TOML"),
        ("bad.json", "{hnsw_m: 8", "is not valid JSON"),
        ("list.json", "[1, 2]", "must hold a JSON object of settings"),
        ("scalar.json", '"normal"', "must hold a JSON object of settings"),
        ("latin1.toml", None, "cannot read the config file"),
    ],
)
def test_a_bad_file_is_a_typed_error_naming_it(
    name: str, text: str | None, match: str, tmp_path: Path
) -> None:
    path = tmp_path / name
    if text is not None:
        _write(path, text)
    elif name.startswith("latin1"):
        path.write_bytes('durability = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigFileError, match=match) as info:
        EmbeddixSettings(config=path)
    assert isinstance(info.value, EmbeddixError) and isinstance(info.value, ValueError)
    assert str(path) in str(info.value)


def test_a_bad_value_in_the_file_names_the_field(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "e.toml", "hnsw_m = 1\n")
    with pytest.raises(ValueError, match="hnsw_m"):
        EmbeddixSettings(config=cfg)


def test_server_file_may_hold_engine_keys_but_no_unknown_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _write(tmp_path / "s.toml", 'agent = "from-file"\nport = 9000\ndurability = "normal"\n')
    monkeypatch.setenv("EMBEDDIX_PORT", "9100")
    s = ServerSettings(config=cfg, embedder="hash")
    assert (s.agent, s.port) == ("from-file", 9100)  # environment over the file
    assert ServerSettings(config=cfg, port=9200, embedder="hash").port == 9200  # arguments over both
    typo = _write(tmp_path / "typo.json", json.dumps({"agent": "a", "durabilty": "normal"}))
    with pytest.raises(ConfigError, match=r"unknown keys \['durabilty'\]"):
        ServerSettings(config=typo)
    with pytest.raises(ConfigError, match="no such file"):
        ServerSettings(config=tmp_path / "nowhere.toml")


def test_cli_reports_a_bad_config_file_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(tmp_path / "nowhere.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("embeddix-mcp: error: cannot read the config file") and "nowhere.toml" in err
    bad = _write(tmp_path / "bad.toml", "port = [")
    assert main(["--config", str(bad)]) == 2
    assert "is not valid TOML" in capsys.readouterr().err

"""Server settings (pydantic-settings) and the bearer-token table.

Merge order, lowest first: built-in defaults -> a config file (TOML or JSON, named by ``--config`` or
``EMBEDDIX_CONFIG``) -> ``EMBEDDIX_*`` environment variables -> command-line arguments. The config file holds
the same keys as the environment without the prefix, e.g.::

    # embeddix-mcp.toml
    data = "~/embeddix-data"
    agent = "claude"
    embedder = "minilm"
    transport = "streamable-http"
    port = 8765
    token_file = "~/.config/embeddix/tokens.json"

Tokens are secrets: they are never logged, never part of ``repr``, and compared in constant time.

Authentication fails closed (:func:`http_tokens`): over HTTP, a configured token source that yields no
usable token (an empty, blank or ``{}`` file, an empty ``EMBEDDIX_TOKEN``) is a startup error, and so is no
token source at all. The only way to serve HTTP without authentication is the explicit ``no_auth``
(``--no-auth``, ``EMBEDDIX_NO_AUTH``), and only on a loopback address.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import stat
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from .agents import check_agent

__all__ = [
    "STARTUP_LOGGER",
    "ConfigError",
    "ServerSettings",
    "TokenTable",
    "http_tokens",
    "is_loopback",
    "load_tokens",
]

log = logging.getLogger("embeddix_mcp")
# The logger of start-up progress (database open, model load and its time): at the default WARNING level
# the CLI still shows its INFO lines, since a silent 30 s first start looks like a hang.
STARTUP_LOGGER = "embeddix_mcp.startup"

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
MIN_TOKEN_LENGTH = 16
_TOKEN_HELP = (
    f"every token must be at least {MIN_TOKEN_LENGTH} visible ASCII characters without spaces; generate one "
    "with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
)


class ConfigError(ValueError):
    """The server configuration is unusable (the message says which setting and how to fix it)."""


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Values from the TOML/JSON file named by the ``config`` init argument or ``EMBEDDIX_CONFIG``."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._values = read_config_file(path) if path is not None else {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._values.items() if k in self.settings_cls.model_fields}


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or JSON (anything else) config file into a flat dict.

    Raises:
        ConfigError: The file is missing, unreadable, or not a table of settings.
    """
    path = Path(path).expanduser()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {str(path)!r}: {exc}") from exc
    try:
        data = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"config file {str(path)!r} is not valid {path.suffix[1:] or 'JSON'}: {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a table of settings, got {type(data).__name__}"
        )
    unknown = sorted(set(data) - set(ServerSettings.model_fields))
    if unknown:
        raise ConfigError(
            f"config file {str(path)!r} has unknown keys {unknown}; "
            f"known keys: {sorted(ServerSettings.model_fields)}"
        )
    return data


class ServerSettings(BaseSettings):
    """Settings of one ``embeddix-mcp`` process; every field reads ``EMBEDDIX_<NAME>``.

    Attributes:
        data: Data directory (``EMBEDDIX_DATA``); ``":memory:"`` for a private in-memory database.
        agent: The agent served over stdio (and over HTTP when no token table is configured).
        embedder: ``"minilm"`` (all-MiniLM-L6-v2, offline) or ``"hash"`` (fast deterministic test embedder).
        embed_threads: Threads ONNX Runtime uses inside one MiniLM call (``EMBEDDIX_EMBED_THREADS``); 0 lets
            the runtime choose (one per core). Unset: 1 on a machine with two cores or fewer, else the
            runtime's choice. On two cores a second thread barely speeds up a query of a few dozen tokens,
            while its pool spins between calls and takes the only other core from the client, the searches
            and the protocol work (measured over stdio on 2 cores: recall p95 24-28 ms with one thread
            against 38-47 ms with the runtime's choice, and a third less CPU per call).
        transport: ``"stdio"`` or ``"streamable-http"``.
        host: HTTP bind address; loopback by default. Binding beyond loopback requires a token.
        port: HTTP port.
        token: One bearer token for ``agent`` (``EMBEDDIX_TOKEN``).
        token_file: A file holding one token (for ``agent``) or a JSON object ``{"<token>": "<agent>"}``.
        no_auth: Serve HTTP without authentication (``--no-auth``, ``EMBEDDIX_NO_AUTH``), as ``agent``;
            allowed only on a loopback ``host`` and without any token configured.
        max_body_bytes: Largest accepted HTTP request body; larger requests get 413.
        allowed_hosts: Extra ``Host`` header values accepted by DNS-rebinding protection (``"name:*"`` allows
            any port).
        allowed_origins: Extra ``Origin`` values accepted (e.g. ``"https://app.example:*"``).
        log_level: Server log level (to stderr; stdout is the stdio transport).
        config: The config file these settings were merged from (``EMBEDDIX_CONFIG``).
    """

    model_config = SettingsConfigDict(env_prefix="EMBEDDIX_", extra="ignore", validate_default=True)

    data: str = "./embeddix-data"
    agent: str = "default"
    embedder: Literal["minilm", "hash"] = "minilm"
    embed_threads: int | None = Field(None, ge=0, le=256)
    transport: Literal["stdio", "streamable-http"] = "stdio"
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    token: SecretStr | None = None
    token_file: Path | None = None
    no_auth: bool = False
    max_body_bytes: int = Field(1_048_576, ge=1024, le=1 << 30)
    allowed_hosts: list[str] = Field(default_factory=list)
    allowed_origins: list[str] = Field(default_factory=list)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "WARNING"
    config: Path | None = None

    @field_validator("agent")
    @classmethod
    def _agent_name(cls, value: str) -> str:
        return check_agent(value)

    @field_validator("embedder", "transport", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path: Any = None
        if isinstance(init_settings, InitSettingsSource):
            path = init_settings.init_kwargs.get("config")
        if path is None:
            path = env_settings().get("config")
        return init_settings, env_settings, _ConfigFileSource(settings_cls, Path(path) if path else None)

    @property
    def onnx_threads(self) -> int | None:
        """``embed_threads`` resolved: a thread count, or None for ONNX Runtime's own choice."""
        if self.embed_threads is None:
            return 1 if (os.cpu_count() or 1) <= 2 else None
        return self.embed_threads or None

    @property
    def in_memory(self) -> bool:
        """True when ``data`` asks for a private in-memory database."""
        return self.data.strip() == ":memory:"

    @property
    def data_path(self) -> Path | None:
        """The data directory, or None in memory."""
        return None if self.in_memory else Path(self.data).expanduser()


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only accepts connections from this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class TokenTable:
    """Bearer tokens and the agent each one authenticates.

    Only SHA-256 digests of the tokens are kept; a lookup compares the presented token's digest with every
    entry in constant time, so neither the table nor its timing reveals a token.
    """

    def __init__(self, tokens: dict[str, str]) -> None:
        self._entries = [(hashlib.sha256(t.encode()).digest(), check_agent(a)) for t, a in tokens.items()]

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"TokenTable({len(self._entries)} token(s), agents={sorted(self.agents)})"

    @property
    def agents(self) -> set[str]:
        """The agents that have at least one token."""
        return {agent for _, agent in self._entries}

    def agent_for(self, token: str) -> str | None:
        """The agent ``token`` authenticates, or None."""
        digest = hashlib.sha256(token.encode()).digest()
        found: str | None = None
        for known, agent in self._entries:
            if hmac.compare_digest(known, digest):
                found = agent
        return found


def _valid_token(token: str) -> bool:
    # What an Authorization header carries intact: visible ASCII, no spaces (RFC 6750 b64token is a
    # subset). A token of 16 spaces would be "long enough" and yet blank.
    return len(token) >= MIN_TOKEN_LENGTH and all("!" <= ch <= "~" for ch in token)


def _read_token_file(path: Path, agent: str) -> dict[str, str]:
    """The tokens of one token file (see :func:`load_tokens`); never empty."""
    try:
        text = path.read_text(encoding="utf-8").strip()
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the token file {str(path)!r}: {exc}") from exc
    if os.name == "posix" and stat.S_IMODE(mode) & 0o077:
        log.warning(
            "token file %s is readable by other users (mode %03o); restrict it with: chmod 600 %s",
            path,
            stat.S_IMODE(mode),
            path,
        )
    if not text:
        raise ConfigError(
            f"token file {str(path)!r} is empty; put one token in it, or a JSON object "
            f'{{"<token>": "<agent>"}}; {_TOKEN_HELP}'
        )
    if text.startswith(("{", "[")):
        try:
            table = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"token file {str(path)!r} looks like JSON but does not parse: {exc}") from exc
        if not isinstance(table, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in table.items()
        ):
            raise ConfigError(
                f'token file {str(path)!r} must map token strings to agent names: {{"<token>": "<agent>"}}'
            )
        if not table:
            raise ConfigError(
                f'token file {str(path)!r} holds no tokens ({{}}); add {{"<token>": "<agent>"}}'
            )
        return table
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        # Several lines are not several tokens: say so instead of silently using the first one.
        raise ConfigError(
            f"token file {str(path)!r} has {len(lines)} lines; it holds one token, or for several agents a "
            f'JSON object {{"<token>": "<agent>", ...}}'
        )
    return {lines[0]: agent}


def load_tokens(settings: ServerSettings) -> TokenTable:
    """Build the token table from ``token`` and ``token_file``.

    A token file holds either a JSON object mapping tokens to agent names, or a single token (one line) for
    ``settings.agent``. A token file readable by group or others gets a warning (``chmod 600 FILE``).

    Returns:
        The table; empty only if neither ``token`` nor ``token_file`` is set.

    Raises:
        ConfigError: The file cannot be read or holds no token, ``token`` is set but empty, a token is
            shorter than 16 characters or holds spaces or control characters, or an agent name is invalid.
    """
    tokens: dict[str, str] = {}
    if settings.token is not None:
        if not settings.token.get_secret_value().strip():
            raise ConfigError(f"EMBEDDIX_TOKEN is set but empty; {_TOKEN_HELP}")
        tokens[settings.token.get_secret_value()] = settings.agent
    if settings.token_file is not None:
        path = settings.token_file.expanduser()
        for token, agent in _read_token_file(path, settings.agent).items():
            if token in tokens and tokens[token] != agent:
                raise ConfigError(f"token file {str(path)!r} gives EMBEDDIX_TOKEN to a second agent")
            tokens[token] = agent
    for n, token in enumerate(tokens, 1):
        if not _valid_token(token):
            raise ConfigError(f"bearer token #{n} is not usable: {_TOKEN_HELP}")
    try:
        return TokenTable(tokens)
    except ValueError as exc:
        raise ConfigError(f"token table: {exc}") from exc


def http_tokens(settings: ServerSettings) -> TokenTable | None:
    """The tokens an HTTP server checks, or None when ``settings.no_auth`` turns authentication off.

    There is no other way to turn it off: no token source at all is an error, not an open server.

    Returns:
        A non-empty token table, or None for ``no_auth`` on loopback.

    Raises:
        ConfigError: ``no_auth`` with a token or beyond loopback; no token source without ``no_auth``; or
            any error of :func:`load_tokens`.
    """
    configured = settings.token is not None or settings.token_file is not None
    if settings.no_auth:
        if configured:
            raise ConfigError(
                "--no-auth (EMBEDDIX_NO_AUTH) and a token (--token-file, EMBEDDIX_TOKEN_FILE or "
                "EMBEDDIX_TOKEN) contradict each other; drop one of them"
            )
        if not is_loopback(settings.host):
            raise ConfigError(
                f"refusing --no-auth on {settings.host!r}: serving without authentication is only allowed "
                f"on loopback (127.0.0.1, ::1); give --token-file to bind beyond it"
            )
        return None
    if not configured:
        raise ConfigError(
            f"refusing to serve HTTP on {settings.host!r} without authentication: give --token-file "
            f"(EMBEDDIX_TOKEN_FILE) or EMBEDDIX_TOKEN, or pass --no-auth (EMBEDDIX_NO_AUTH=1) to serve "
            f"one agent without tokens on loopback"
        )
    tokens = load_tokens(settings)
    if not tokens:  # load_tokens refuses every empty source; this keeps the rule local and explicit
        raise ConfigError("the configured token sources hold no token")
    return tokens

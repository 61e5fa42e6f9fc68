"""Server settings (pydantic-settings) and the bearer-token table.

Merge order, lowest first: built-in defaults -> a config file (TOML or JSON, named by ``--config`` or
``EMBEDDIX_CONFIG``) -> ``EMBEDDIX_*`` environment variables -> command-line arguments. The config file holds
the same keys as the environment without the prefix, and may hold the engine's settings too
(:class:`embeddix_core.EmbeddixSettings`, e.g. ``durability``); a key neither knows is an error. It is read by
pydantic-settings' ``TomlConfigSettingsSource`` / ``JsonConfigSettingsSource``
(:func:`embeddix_core.config.config_file_source`), e.g.::

    # embeddix-mcp.toml
    data = "~/embeddix-data"
    agent = "claude"
    embedder = "minilm"
    transport = "streamable-http"
    port = 8765
    token_file = "~/.config/embeddix/tokens.json"
    durability = "normal"   # an engine setting

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
import re
import stat
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from embeddix_core import EmbeddixSettings, InvalidArgumentError
from embeddix_core.config import ConfigFileError, config_file_path, config_file_source
from embeddix_core.embeddings import OpenAIEmbedder

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

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
EMBEDDER_CHOICES = (
    "expected 'minilm', 'hash', 'st:<sentence-transformers model directory or cached name>' or "
    "'openai:<model>' (with EMBEDDIX_OPENAI_BASE_URL for a server other than OpenAI)"
)
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
MIN_TOKEN_LENGTH = 16
_TOKEN_HELP = (
    f"every token must be at least {MIN_TOKEN_LENGTH} visible ASCII characters without spaces; generate one "
    "with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
)


def split_openai_name(rest: str) -> tuple[str, str | None]:
    """``"<model>"`` or ``"<model>@<base_url>"`` (the form of an OpenAI embedder's ``model_id``) as parts."""
    match = re.fullmatch(r"(?P<model>.+)@(?P<url>https?://.+)", rest, flags=re.IGNORECASE)
    if match is None:
        return rest, None
    return match["model"], OpenAIEmbedder(match["model"], match["url"]).base_url


class ConfigError(ValueError):
    """The server configuration is unusable (the message says which setting and how to fix it)."""


class ServerSettings(BaseSettings):
    """Settings of one ``embeddix-mcp`` process; every field reads ``EMBEDDIX_<NAME>``.

    Attributes:
        data: Data directory (``EMBEDDIX_DATA``); ``":memory:"`` for a private in-memory database.
        agent: The agent served over stdio (and over HTTP when no token table is configured).
        embedder: ``"minilm"`` (all-MiniLM-L6-v2, offline, the default), ``"hash"`` (fast deterministic
            test embedder), ``"st:<model directory or cached name>"`` (any sentence-transformers model
            already on this machine; never downloaded) or ``"openai:<model>"`` (an OpenAI-compatible
            ``POST <openai_base_url>/embeddings`` endpoint). Collections record the model's id and refuse
            to be used with another one.
        openai_base_url: The API root of an ``openai:`` embedder (``EMBEDDIX_OPENAI_BASE_URL``); default
            OpenAI's, ``https://api.openai.com/v1``. Part of the model's identity.
        openai_api_key: Its API key (``EMBEDDIX_OPENAI_API_KEY``; environment or config file only, never a
            command-line argument, which other users can read in the process list); none for a local
            server. Never logged.
        embed_dim: The dimension an ``openai:`` model returns (``EMBEDDIX_EMBED_DIM``), checked on every
            reply; unset: learned from the first reply.
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
    embedder: str = "minilm"
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    embed_dim: int | None = Field(None, ge=1, le=65_536)
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

    @field_validator("transport", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("embedder", mode="before")
    @classmethod
    def _embedder_name(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        name = value.strip()
        # Only the keyword is case-insensitive: a path, a model name and a URL are not.
        head, sep, rest = name.partition(":")
        if not sep:
            name = name.lower()
            if name not in ("minilm", "hash"):
                raise ValueError(f"unknown embedder {value!r}; {EMBEDDER_CHOICES}")
            return name
        head = head.lower()
        if head not in ("st", "openai") or not rest.strip():
            raise ValueError(f"unknown embedder {value!r}; {EMBEDDER_CHOICES}")
        return f"{head}:{rest.strip()}"

    @field_validator("openai_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:  # building one checks and normalises the URL; nothing is sent
            return OpenAIEmbedder("check", value).base_url
        except InvalidArgumentError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _one_base_url(self) -> ServerSettings:
        if self.embedder.startswith("openai:"):
            _, url = split_openai_name(self.embedder[len("openai:") :])
            if url is not None and self.openai_base_url is not None and url != self.openai_base_url:
                raise ValueError(
                    f"embedder {self.embedder!r} names the base URL {url!r}, but openai_base_url "
                    f"(EMBEDDIX_OPENAI_BASE_URL) is {self.openai_base_url!r}; give it in one place"
                )
        return self

    @property
    def openai_target(self) -> tuple[str, str]:
        """``(model, base_url)`` of an ``openai:`` embedder: the URL from the name, the setting, or OpenAI's.

        Raises:
            ConfigError: ``embedder`` is not an ``openai:`` one.
        """
        if not self.embedder.startswith("openai:"):
            raise ConfigError(f"embedder {self.embedder!r} is not an 'openai:<model>' embedder")
        model, url = split_openai_name(self.embedder[len("openai:") :])
        return model, url or self.openai_base_url or DEFAULT_OPENAI_BASE_URL

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # pydantic-settings' TOML/JSON sources read the file; the engine's settings read the same file, so
        # its keys are allowed here too, and a key neither knows is refused (a typo would otherwise be lost).
        path = config_file_path(init_settings, env_settings)
        try:
            file_settings = config_file_source(
                settings_cls,
                path,
                known_keys=set(settings_cls.model_fields) | set(EmbeddixSettings.model_fields),
            )
        except ConfigFileError as exc:
            raise ConfigError(str(exc)) from exc
        return init_settings, env_settings, file_settings

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

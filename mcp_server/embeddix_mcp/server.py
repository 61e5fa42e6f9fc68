"""Build the MCP server (``build_server``) and its HTTP application (``build_http_app``).

Over HTTP, requests pass, outermost first: the body-size limit (413 above ``max_body_bytes``), bearer-token
authentication (401 without a valid token when tokens are configured), then the SDK's streamable-HTTP
transport with DNS-rebinding protection (421 for a ``Host`` and 403 for an ``Origin`` that is not allowed).
``/healthz`` answers without authentication: 200 once the model is loaded and the database open, else 503.
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import RequestBodyLimitMiddleware, TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from embeddix_core.embeddings import Embedder

from . import tools
from .settings import LOOPBACK_NAMES, ConfigError, ServerSettings, TokenTable, is_loopback, load_tokens
from .state import AppState, open_state

__all__ = ["TokenVerifier", "build_http_app", "build_server", "security_settings"]

log = logging.getLogger("embeddix_mcp")

INSTRUCTIONS = """\
Embeddix is your long-term memory. Use `remember` to store facts, preferences, decisions and events worth
keeping (add tags, source, importance 0..1 in metadata); `recall` with a natural-language query before
answering anything that may depend on earlier conversations; `feedback` to say whether a recalled memory
helped; `update`/`forget` to correct or remove. Scores are similarities: 1.0 is the same meaning, below about
0.3 is unrelated. For documents, `ingest` them into a collection and use `search_collection`."""


class TokenVerifier:
    """Checks bearer tokens against the token table; the token's agent becomes the principal (client_id)."""

    def __init__(self, table: TokenTable) -> None:
        self._table = table

    async def verify_token(self, token: str) -> AccessToken | None:
        agent = self._table.agent_for(token)
        if agent is None:
            return None
        # The token itself is not kept in the principal: it would end up in request state and logs.
        return AccessToken(token="<redacted>", client_id=agent, scopes=["memory"], subject=agent)


@dataclass
class _Runtime:
    """Lets the HTTP health route see whether the lifespan has finished starting."""

    state: AppState | None = None


def build_server(
    settings: ServerSettings | None = None,
    *,
    embedder: Embedder | None = None,
    tokens: TokenTable | None = None,
) -> MCPServer[AppState]:
    """Build the Embeddix MCP server.

    Args:
        settings: Server settings (default: from the environment and config file).
        embedder: Use this embedder instead of ``settings.embedder`` (tests, benchmarks).
        tokens: Bearer tokens for HTTP; each authenticates one agent. None or empty: no authentication
            (stdio, or HTTP on loopback for a single agent).

    Returns:
        The server; run it with ``server.run()`` (stdio) or serve :func:`build_http_app`.
    """
    s = settings or ServerSettings()
    runtime = _Runtime()

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        # Over HTTP every agent with a token is served; otherwise the one configured agent.
        agents = tokens.agents if tokens else {s.agent}
        state = await anyio.to_thread.run_sync(functools.partial(open_state, s, embedder, warm_agents=agents))
        runtime.state = state
        try:
            yield state
        finally:
            runtime.state = None
            await anyio.to_thread.run_sync(state.close)

    auth: dict[str, Any] = {}
    if tokens:
        # AuthSettings wants an issuer URL, used only by OAuth routes, which this server does not mount.
        auth = {
            "auth": AuthSettings(
                issuer_url=f"http://{_url_host(s.host)}:{s.port or 80}", resource_server_url=None
            ),
            "token_verifier": TokenVerifier(tokens),
        }
    server: MCPServer[AppState] = MCPServer(
        "embeddix",
        title="Embeddix memory",
        description="Long-term vector memory for agents (remember, recall, forget) and document collections.",
        instructions=INSTRUCTIONS,
        version=_version(),
        lifespan=lifespan,
        log_level=s.log_level,
        **auth,
    )
    tools.register(server)

    @server.custom_route("/healthz", methods=["GET"], include_in_schema=False)
    async def healthz(request: Request) -> Response:
        state = runtime.state
        if state is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ok", "embedder": state.embedder.model_id, "dim": state.embedder.dim})

    return server


def security_settings(settings: ServerSettings) -> TransportSecuritySettings:
    """DNS-rebinding protection, always on; the allowed Host/Origin values derive from the bind address."""
    names: list[str] = list(LOOPBACK_NAMES) if is_loopback(settings.host) else [settings.host]
    if settings.host in ("0.0.0.0", "::"):
        names = [*LOOPBACK_NAMES, socket.gethostname(), socket.getfqdn()]
    hosts = [h for n in dict.fromkeys(names) for h in (_url_host(n), f"{_url_host(n)}:*")]
    origins = [
        o for n in dict.fromkeys(names) for o in (f"http://{_url_host(n)}:*", f"https://{_url_host(n)}:*")
    ]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*hosts, *settings.allowed_hosts],
        allowed_origins=[*origins, *settings.allowed_origins],
    )


def build_http_app(settings: ServerSettings, *, embedder: Embedder | None = None) -> ASGIApp:
    """The streamable-HTTP ASGI app (MCP at ``/mcp``, health at ``/healthz``), with its security layers.

    Raises:
        ConfigError: Binding beyond loopback without a bearer token.
    """
    tokens = load_tokens(settings)
    if not tokens and not is_loopback(settings.host):
        raise ConfigError(
            f"refusing to serve HTTP on {settings.host!r} without authentication: set EMBEDDIX_TOKEN or "
            f"EMBEDDIX_TOKEN_FILE (--token-file), or bind 127.0.0.1"
        )
    server = build_server(settings, embedder=embedder, tokens=tokens)
    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        max_request_body_size=settings.max_body_bytes,
        transport_security=security_settings(settings),
        host=settings.host,
    )
    return RequestBodyLimitMiddleware(app, settings.max_body_bytes)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("embeddix")
    except PackageNotFoundError:
        return "0.0.0"

"""Build the MCP server (``build_server``) and its HTTP application (``build_http_app``).

Over HTTP, requests to ``/mcp`` pass, outermost first: bearer-token authentication (401 without a valid
token; it looks at the headers only), then the SDK's streamable-HTTP transport, which enforces the body-size
limit (413 above ``max_body_bytes``, counted as the body streams in, so a chunked body without
``Content-Length`` is held to it too) and DNS-rebinding protection (421 for a ``Host`` and 403 for an
``Origin`` that is not allowed). Authentication comes first so that nobody without a token can make the
server read (and buffer) a body at all. ``/healthz`` answers without authentication: 200 ``ok`` once the
model is loaded and the database open, else 503 (``starting``, ``warming`` while the model loads in the
background, or ``failed``). Whether tokens are required is decided by
:func:`~embeddix_mcp.settings.http_tokens`: always, unless ``--no-auth`` on loopback.
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
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, InputRequiredResult
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from embeddix_core.embeddings import Embedder

from . import ops_http, tools
from .render import one_line, validation_message
from .settings import LOOPBACK_NAMES, ConfigError, ServerSettings, TokenTable, http_tokens, is_loopback
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


class _EmbeddixServer(MCPServer[AppState]):
    """``MCPServer`` whose tool errors are one line the model can act on.

    The SDK reports arguments that fail the input schema with pydantic's full dump: several lines per
    field, the rejected input echoed back (up to a 32 KB string, control characters included) and a link to
    pydantic's documentation. The model needs the field and what it should be; everything else is noise,
    and echoed input is one more place for untrusted text to pose as layout.
    """

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[AppState, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError:
            raise  # the SDK already replaced the message with a generic one and logs the cause
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                # Chained to the ValidationError: the SDK logs the rejected field names from it.
                raise ToolError(f"Error executing tool {name}: {validation_message(cause)}") from cause
            raise ToolError(one_line(str(exc))) from cause


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
        tokens: Bearer tokens for HTTP; each authenticates one agent. None: no authentication (stdio, the
            in-memory client, or HTTP with ``--no-auth`` on loopback). An empty table is refused, so that
            a token source that yielded nothing can never mean "no authentication".

    Returns:
        The server; run it with ``server.run()`` (stdio) or serve :func:`build_http_app`.

    Raises:
        ConfigError: ``tokens`` is an empty table.
    """
    s = settings or ServerSettings()
    if tokens is not None and not tokens:
        raise ConfigError("the token table is empty; pass None to serve without authentication")
    runtime = _Runtime()

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        # Over HTTP every agent with a token is served; otherwise the one configured agent. The model loads in
        # the background, so that initialize (and /healthz) answer at once; tools wait for it (state.py).
        agents = tokens.agents if tokens is not None else {s.agent}
        state = await anyio.to_thread.run_sync(
            functools.partial(open_state, s, embedder, warm_agents=agents, background=True)
        )
        runtime.state = state
        try:
            yield state
        finally:
            runtime.state = None
            await anyio.to_thread.run_sync(state.close)

    auth: dict[str, Any] = {}
    if tokens is not None:
        # AuthSettings wants an issuer URL, used only by OAuth routes, which this server does not mount.
        auth = {
            "auth": AuthSettings(
                issuer_url=f"http://{_url_host(s.host)}:{s.port or 80}", resource_server_url=None
            ),
            "token_verifier": TokenVerifier(tokens),
        }
    server: MCPServer[AppState] = _EmbeddixServer(
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
        emb = state.loaded_embedder
        if emb is None:
            return JSONResponse({"status": state.status}, status_code=503)
        return JSONResponse({"status": "ok", "embedder": emb.model_id, "dim": emb.dim})

    # /metrics and /api/v1/performance/*: the token of /mcp, and its Host/Origin rules (ops_http.py)
    ops_http.register(server, lambda: runtime.state, tokens, s.agent, lambda: security_settings(s))
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
        ConfigError: No usable token and no ``no_auth``; ``no_auth`` beyond loopback or with a token; or a
            token file that cannot be read or holds no valid token (see
            :func:`~embeddix_mcp.settings.http_tokens`).
    """
    tokens = http_tokens(settings)
    server = build_server(settings, embedder=embedder, tokens=tokens)
    # No body-size middleware around the whole app: it would read the body before authentication. The
    # SDK's transport, which the auth check wraps, enforces max_request_body_size on the streamed bytes.
    return server.streamable_http_app(
        streamable_http_path="/mcp",
        max_request_body_size=settings.max_body_bytes,
        transport_security=security_settings(settings),
        host=settings.host,
    )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("embeddix")
    except PackageNotFoundError:
        return "0.0.0"

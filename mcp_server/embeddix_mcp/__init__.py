"""embeddix_mcp: an MCP server giving LLM agents long-term vector memory on an embedded Embeddix database.

Run it with ``embeddix-mcp --data DIR --agent NAME`` (stdio) or ``--transport streamable-http``; build it in
code with :func:`build_server` (and :func:`build_http_app` for HTTP).
"""

from __future__ import annotations

from .agents import AccessDeniedError, Grant, GrantStore
from .server import build_http_app, build_server
from .settings import ConfigError, ServerSettings, TokenTable, load_tokens
from .state import AgentSession, AppState

__all__ = [
    "AccessDeniedError",
    "AgentSession",
    "AppState",
    "ConfigError",
    "Grant",
    "GrantStore",
    "ServerSettings",
    "TokenTable",
    "build_http_app",
    "build_server",
    "load_tokens",
]

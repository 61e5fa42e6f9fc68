"""``embeddix-mcp``: run the Embeddix MCP server over stdio (default) or streamable HTTP.

Examples::

    embeddix-mcp --data ~/embeddix-data --agent claude
    embeddix-mcp --transport streamable-http --port 8765 --token-file ~/.config/embeddix/tokens.json
    embeddix-mcp --transport streamable-http --no-auth     # one agent, loopback only, no tokens
    embeddix-mcp --version                                 # or: python -m embeddix_mcp --version
    embeddix-mcp --embedder st:/models/bge-small-en-v1.5   # a local sentence-transformers model
    EMBEDDIX_OPENAI_API_KEY=sk-... embeddix-mcp --embedder openai:text-embedding-3-small
    embeddix-mcp --embedder openai:nomic-embed-text --openai-base-url http://127.0.0.1:11434/v1

Every option falls back to its ``EMBEDDIX_*`` environment variable, then the config file, then the default.
Logs go to stderr: over stdio, stdout carries the protocol.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from .settings import STARTUP_LOGGER, ConfigError, ServerSettings

__all__ = ["main", "parse_args"]

# The distribution that installs this package (and the ``embeddix-mcp`` command).
DISTRIBUTION = "embeddix"


def _version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        # Run from a source tree that was never installed: there is no installed version to report.
        return "unknown (not installed)"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (options left out are None, so lower-priority sources apply)."""
    p = argparse.ArgumentParser(
        prog="embeddix-mcp",
        description="Embeddix MCP server: long-term vector memory for LLM agents.",
        epilog="Environment: EMBEDDIX_DATA, EMBEDDIX_AGENT, EMBEDDIX_EMBEDDER, EMBEDDIX_EMBED_THREADS, "
        "EMBEDDIX_OPENAI_BASE_URL, EMBEDDIX_OPENAI_API_KEY (environment or config file only), "
        "EMBEDDIX_EMBED_DIM, EMBEDDIX_TRANSPORT, EMBEDDIX_HOST, EMBEDDIX_PORT, EMBEDDIX_TOKEN, "
        "EMBEDDIX_TOKEN_FILE, EMBEDDIX_NO_AUTH, EMBEDDIX_MAX_BODY_BYTES, EMBEDDIX_RAY_ADDRESS, "
        "EMBEDDIX_CONFIG.",
    )
    p.add_argument("--data", help="data directory, or :memory: (default ./embeddix-data)")
    p.add_argument(
        "--agent", help="agent served over stdio, and over HTTP with --no-auth (default 'default')"
    )
    p.add_argument("--transport", choices=["stdio", "streamable-http"], help="default stdio")
    p.add_argument("--host", help="HTTP bind address (default 127.0.0.1; anything else requires a token)")
    p.add_argument("--port", type=int, help="HTTP port (default 8765)")
    # Free-form, checked by ServerSettings: the st: and openai: forms carry a path or a model name.
    p.add_argument(
        "--embedder",
        metavar="MODEL",
        help="embedding model: minilm (default), hash, st:<sentence-transformers model directory or cached "
        "name> (never downloaded), or openai:<model> (an OpenAI-compatible /embeddings endpoint)",
    )
    p.add_argument(
        "--openai-base-url",
        metavar="URL",
        help="API root of an openai: embedder (default https://api.openai.com/v1); its key is read from "
        "EMBEDDIX_OPENAI_API_KEY or the config file, never from the command line",
    )
    p.add_argument(
        "--embed-dim", type=int, help="dimension an openai: model returns (checked on every reply)"
    )
    p.add_argument(
        "--embed-threads",
        type=int,
        help="threads per embedding call (0: one per core; default 1 on <= 2 cores, else one per core)",
    )
    p.add_argument("--token-file", help='HTTP bearer tokens: one token, or JSON {"<token>": "<agent>"}')
    p.add_argument(
        "--no-auth",
        action="store_true",
        default=None,  # None, not False: EMBEDDIX_NO_AUTH and the config file still apply when left out
        help="serve HTTP without authentication, as --agent; only on loopback and without tokens",
    )
    p.add_argument("--max-body-bytes", type=int, help="largest HTTP request body (default 1 MiB)")
    p.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="serve the sharded store on this Ray cluster ('auto' or host:port; the [ray] extra), "
        "--data being its root; several servers may serve one store (EMBEDDIX_RAY_ADDRESS). "
        "Never expose Ray's ports",
    )
    p.add_argument("--config", help="TOML or JSON config file (same keys as the environment, without prefix)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
    p.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}", help="print the version and exit"
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until the client disconnects (stdio) or the process is interrupted (HTTP).

    Returns:
        The process exit status (2 for a configuration error).

    Raises:
        SystemExit: ``--help`` or ``--version`` (status 0, after printing), or a command-line error
            (status 2), as argparse does.
    """
    args = parse_args(argv)
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None}
    ray_address = overrides.pop("ray_address", None)
    try:
        settings = ServerSettings(**overrides)
    except (ValidationError, ConfigError) as exc:
        print(f"embeddix-mcp: error: {exc}", file=sys.stderr)
        return 2
    if ray_address is not None:
        if settings.in_memory:
            print("embeddix-mcp: error: --ray-address needs --data to name a directory", file=sys.stderr)
            return 2
        os.environ["EMBEDDIX_RAY_ADDRESS"] = ray_address  # read where the database opens (state.py)
    if settings.config is not None:
        # The engine's settings (EmbeddixSettings, built where the database opens) find the file through
        # EMBEDDIX_CONFIG: a --config given here must reach them as well as ServerSettings.
        os.environ["EMBEDDIX_CONFIG"] = str(settings.config)
    logging.basicConfig(
        level=settings.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.log_level == "WARNING":
        # At the default level, still say what start-up is doing: the first start prepares the model for
        # about 30 s, which would otherwise look like a hang. --log-level ERROR silences it.
        logging.getLogger(STARTUP_LOGGER).setLevel(logging.INFO)
    from embeddix_core import EmbeddixError

    from .state import make_embedder

    try:
        # Names only, nothing loads: a missing st: model or a bad argument fails here, with status 2,
        # instead of in the background loader after the server has started.
        make_embedder(settings)
    except EmbeddixError as exc:
        print(f"embeddix-mcp: error: {exc}", file=sys.stderr)
        return 2
    if settings.transport == "stdio":
        from .server import build_server

        build_server(settings).run("stdio")
        return 0
    return _serve_http(settings)


def _serve_http(settings: ServerSettings) -> int:
    import uvicorn

    from .server import build_http_app

    try:
        app = build_http_app(settings)
    except ConfigError as exc:
        print(f"embeddix-mcp: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"embeddix-mcp: serving MCP on http://{settings.host}:{settings.port}/mcp (health: /healthz)",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()
    return 0

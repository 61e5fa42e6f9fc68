"""The ``embeddix`` commands (Click). Imported only by :func:`embeddix_core.cli.main`: Click and tqdm load
when the command runs, never with the engine.

Exit codes: 0 success; 1 a user error (one ``embeddix: error: ...`` line on stderr: a missing collection,
a bad file, a filter the engine rejects, a path that exists); 2 a usage error (Click's message: an
unknown option, a missing argument, a value of the wrong type); 130 interrupted.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ..collection import Collection
from ..database import Embeddix
from ..embeddings import get_embedder
from ..embeddings._protocol import Embedder
from ..errors import EmbeddixError, MissingExtraError
from . import _bench, _ingest, _transfer

__all__ = ["cli", "run"]

# The default model when neither --embedder nor the collection names one: the core's offline default.
DEFAULT_EMBEDDER = "minilm"

_data_option = click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default="./embeddix-data",
    show_default=True,
    envvar="EMBEDDIX_DATA",
    show_envvar=True,
    help="Data directory of the database.",
)
_embedder_option = click.option(
    "--embedder",
    metavar="MODEL",
    envvar="EMBEDDIX_EMBEDDER",
    show_envvar=True,
    help="Embedding model: minilm (the default, offline), hash (fast, for tests), hash-<dim>, "
    "st:<local sentence-transformers model> or openai:<model>[@<base url>]. Default: the model the "
    "collection was built with.",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _progress_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--progress/--no-progress",
        default=None,
        help="Progress bar on stderr (records/s and ETA). Default: when stderr is a terminal.",
    )(f)


@contextmanager
def _bar(enabled: bool | None, desc: str) -> Iterator[Any]:
    from tqdm import tqdm

    # disable=None is tqdm's "only on a terminal"; unit "rec" makes its rate read records/s
    with tqdm(
        desc=desc, unit="rec", file=sys.stderr, disable=None if enabled is None else not enabled
    ) as bar:
        yield bar


def _open(data: Path, *, create: bool = False) -> Embeddix:
    if not create:
        _transfer.database_file(data)  # a read must not create an empty database where none was
    return Embeddix.open(data)


def _embedder(name: str | None, col: Collection | None) -> Embedder:
    recorded = col.embedding_model if col is not None else None
    return get_embedder(name or recorded or DEFAULT_EMBEDDER)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="embeddix", prog_name="embeddix", message="%(prog)s %(version)s")
def cli() -> None:
    """Embeddix: an embedded memory engine for LLM agents. Load, search, inspect, move and back up data.

    Every command works on a data directory (--data, or EMBEDDIX_DATA; default ./embeddix-data).
    """


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--collection", "-c", required=True, help="Collection to add to (created if missing).")
@_data_option
@click.option(
    "--chunk-size",
    type=click.IntRange(50, 100_000),
    default=1000,
    show_default=True,
    help="Largest chunk, in characters.",
)
@click.option(
    "--overlap",
    type=click.IntRange(0, 100_000),
    default=None,
    help="Characters shared by consecutive chunks. Default: a tenth of --chunk-size.",
)
@click.option(
    "--glob",
    default="*",
    show_default=True,
    help="Which files of a directory to read (recursively; hidden ones never).",
)
@_embedder_option
@_progress_option
def ingest(
    paths: tuple[Path, ...],
    collection: str,
    data: Path,
    chunk_size: int,
    overlap: int | None,
    glob: str,
    embedder: str | None,
    progress: bool | None,
) -> None:
    """Chunk, embed and store files: text, Markdown, JSONL and CSV.

    \b
    JSONL: one {"text": ..., "id": ..., "metadata": {...}} per line ("text" required).
    CSV: a header row with a "text" column; "id" optional; other columns become metadata.
    Other files: the whole file is one UTF-8 document.

    Each file is stored in one transaction: a bad file (reported with its path and line) is skipped
    whole, and the others are stored. A re-run skips the chunks already stored (same id and content
    hash), so an interrupted ingest resumes. Exits 1 when a file was skipped.
    """
    overlap = chunk_size // 10 if overlap is None else overlap
    if overlap >= chunk_size:
        raise click.BadParameter(
            f"expected less than --chunk-size ({chunk_size}); got {overlap}", param_hint="--overlap"
        )
    files = _ingest.find_files(paths, glob)
    with _open(data, create=True) as db:
        col = db.get_collection(collection) if collection in db else None
        model = _embedder(embedder, col)
        if col is None:
            col = db.create_collection(collection, model.dim, embedder=model)
        else:
            col.use_embedder(model)
        with _bar(progress, "embedding") as bar:

            def bad_file(message: str) -> None:
                bar.write(f"embeddix: skipped {message}", file=sys.stderr)

            result = _ingest.ingest_files(
                col,
                model,
                files,
                chunk_size=chunk_size,
                overlap=overlap,
                progress=bar.update,
                on_total=lambda n: setattr(bar, "total", n),
                on_bad_file=bad_file,
            )
    click.echo(
        f"{collection}: {result.files} file(s), {result.stored} chunk(s) stored, "
        f"{result.skipped} already stored, {len(result.failed)} file(s) skipped"
    )
    if result.failed:
        raise _UserError(
            f"{len(result.failed)} file(s) could not be ingested (see above); the others were stored"
        )


def _parse_filter(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        flt = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"expected a JSON object; {exc}") from None
    if not isinstance(flt, dict):
        raise click.BadParameter(f"expected a JSON object; got a JSON {type(flt).__name__}")
    return flt


@cli.command()
@click.argument("query")
@click.option("--collection", "-c", required=True, help="Collection to search.")
@click.option("-k", "--k", "k", type=click.IntRange(1, 100_000), default=10, show_default=True)
@click.option(
    "--filter",
    "flt",
    callback=_parse_filter,
    metavar="JSON",
    help='Metadata filter, e.g. \'{"source": "notes.md"}\' or \'{"year": {"$gte": 2020}}\'.',
)
@_json_option
@_data_option
@_embedder_option
def search(
    query: str,
    collection: str,
    k: int,
    flt: dict[str, Any] | None,
    as_json: bool,
    data: Path,
    embedder: str | None,
) -> None:
    """Find the K records nearest to the text QUERY.

    With --json, prints a list of hits, each with id, score (higher is better), document and metadata.
    """
    with _open(data) as db:
        col = db.get_collection(collection)
        col.use_embedder(_embedder(embedder, col))
        hits = col.search(query, k=k, filter=flt)
    if as_json:
        _echo_json(
            [{"id": h.id, "score": h.score, "document": h.document, "metadata": h.metadata} for h in hits]
        )
        return
    for rank, h in enumerate(hits, start=1):
        doc = " ".join((h.document or "").split())
        click.echo(f"{rank:>3}  {h.score:.4f}  {h.id}  {doc[:80]}")


@cli.command(name="ls")
@_data_option
@_json_option
def ls(data: Path, as_json: bool) -> None:
    """List collections: records, dimension, model, index kind and index bytes (memory)."""
    rows = []
    with _open(data) as db:
        for name in db.list_collections():
            st = db.get_collection(name).stats()
            rows.append(
                {
                    "name": name,
                    "count": st.count,
                    "dim": st.dim,
                    "metric": st.metric,
                    "model": st.embedding_model,
                    "index": st.index,
                    "bytes": st.params.get("memory_bytes"),
                }
            )
    if as_json:
        _echo_json(rows)
        return
    head = ("name", "count", "dim", "metric", "model", "index", "bytes")
    table = [head, *[tuple("-" if r[c] is None else str(r[c]) for c in head) for r in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@cli.command()
@click.argument("collection")
@_data_option
@_json_option
def stats(collection: str, data: Path, as_json: bool) -> None:
    """Show a collection's stats, cache counters and calibration state."""
    with _open(data) as db:
        col = db.get_collection(collection)
        cal = col.calibration
        out = {
            **dataclasses.asdict(col.stats()),
            "cache": col.cache_info(),
            "calibration": None if cal is None else dataclasses.asdict(cal),
        }
    if as_json:
        _echo_json(out)
        return
    for key, value in out.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for sub, v in value.items():
                click.echo(f"  {sub}: {v}")
        else:
            click.echo(f"{key}: {value}")


@cli.command(name="export")
@click.argument("collection")
@click.argument("out", type=click.Path(path_type=Path))
@_data_option
@_progress_option
def export_cmd(collection: str, out: Path, data: Path, progress: bool | None) -> None:
    """Write COLLECTION to the new directory OUT: manifest.json, records.jsonl and vectors.npy.

    A versioned format without pickle, checked by checksums on import (see embeddix_core/cli/_transfer.py).
    """
    with _open(data) as db:
        col = db.get_collection(collection)
        with _bar(progress, "exporting") as bar:
            bar.total = col.count()
            n = _transfer.export_collection(col, out, progress=bar.update)
    click.echo(f"{collection}: {n} record(s) exported to {out}")


@cli.command(name="import")
@click.argument("src", metavar="IN", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--as", "name", metavar="NAME", help="Name of the new collection. Default: the exported one.")
@_data_option
@_progress_option
def import_cmd(src: Path, name: str | None, data: Path, progress: bool | None) -> None:
    """Create a collection from the export directory IN (checksums and format version checked)."""
    with _open(data, create=True) as db, _bar(progress, "importing") as bar:
        col = _transfer.import_collection(
            db, src, name=name, progress=bar.update, on_total=lambda n: setattr(bar, "total", n)
        )
        click.echo(f"{col.name}: {col.count()} record(s) imported into {data}")


@cli.command()
@click.argument("data", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
def backup(data: Path, out: Path) -> None:
    """Copy the database in DIR to the new backup directory OUT, while writers keep running.

    Uses SQLite's online backup API: the copy is the database as of one commit, with every write
    acknowledged before the backup started. Indexes are rebuilt from it on restore.
    """
    m = _transfer.backup_database(data, out)
    click.echo(f"backed up {len(m['collections'])} collection(s) from {data} to {out}")


@cli.command()
@click.argument("src", metavar="BACKUP", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("data", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
def restore(src: Path, data: Path) -> None:
    """Restore BACKUP into DIR, which must not hold a database (checksum and format version checked)."""
    m = _transfer.restore_database(src, data)
    click.echo(f"restored {len(m['collections'])} collection(s) into {data}")


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def serve(args: tuple[str, ...]) -> int:
    """Run the MCP server: the same options as embeddix-mcp (see: embeddix serve --help)."""
    # The server is a package above the core; the core imports none of it (tests/check_imports.py). It
    # is looked up at run time, only here, to hand it the command line: the core uses nothing else of it.
    try:
        server_cli = importlib.import_module("embeddix_mcp.cli")
    except ImportError as exc:
        raise MissingExtraError(
            f"serve runs the MCP server, which could not be imported ({exc}); "
            "install it with: pip install 'embeddix[mcp]'"
        ) from exc
    status: int = server_cli.main(list(args))
    return status


cli.add_command(_bench.bench)


class _UserError(EmbeddixError):
    """A user error the command itself finds (the engine's own errors need no wrapping)."""


def run(argv: Sequence[str] | None = None) -> int:
    """Run one command line and return its exit status (see the module docstring)."""
    try:
        status = cli.main(
            args=list(argv) if argv is not None else None, prog_name="embeddix", standalone_mode=False
        )
    except click.UsageError as exc:
        exc.show()
        return 2
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("embeddix: interrupted", err=True)
        return 130
    except (EmbeddixError, OSError) as exc:
        # one line: a message of the engine may wrap, a log reader or a script wants one line per error
        click.echo(f"embeddix: error: {' '.join(str(exc).split())}", err=True)
        return 1
    return status if isinstance(status, int) else 0

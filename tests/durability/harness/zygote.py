"""A fork server for crash children: imports Embeddix once, then forks one child per run.

Starting Python and importing ``embeddix_core`` takes ~0.5 s, longer than most runs live before they are
killed; a fork takes a few ms. The server itself never opens a database and starts no thread before it
forks (``OPENBLAS_NUM_THREADS=1``, set by :class:`Zygote`, keeps numpy's pool out of it), so each child
starts from a clean single-threaded process, exactly like a fresh interpreter that imported the package.

Protocol on the server's stdin/stdout, one JSON object per line: ``{"spawn": spec}`` -> ``{"pid": n}``
(the child runs :func:`workload.run_child`); ``{"wait": pid}`` -> ``{"status": raw wait status}``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

__all__ = ["ROOT", "Zygote", "child_env", "serve"]

ROOT = Path(__file__).resolve().parents[3]


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a subprocess that imports Embeddix and this harness from this tree."""
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "tests")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["OPENBLAS_NUM_THREADS"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    # the parent's EMBEDDIX_* settings must not leak into children: each run states its own
    for key in [k for k in env if k.startswith("EMBEDDIX_")]:
        del env[key]
    env.update(extra)
    return env


def serve() -> None:
    from durability.harness.workload import run_child

    import embeddix_core  # noqa: F401  (the point of the server: import once, fork many)

    for line in sys.stdin:
        req = json.loads(line)
        if "spawn" in req:
            spec = req["spawn"]
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    err = os.open(spec["log"] + ".stderr", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                    os.dup2(err, 2)
                    null = os.open(os.devnull, os.O_RDWR)
                    os.dup2(null, 0)
                    os.dup2(null, 1)
                    run_child(spec)
                except BaseException:
                    traceback.print_exc()
                    code = 3
                finally:
                    os._exit(code)
            reply: dict[str, Any] = {"pid": pid}
        else:
            _, status = os.waitpid(int(req["wait"]), 0)
            reply = {"status": status}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


class Zygote:
    """The parent's handle on a fork server (a context manager)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from durability.harness.zygote import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
            cwd=str(ROOT),
        )

    def _ask(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server died (exit code {self.proc.wait()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def spawn(self, spec: dict[str, Any]) -> int:
        """Fork a child running the workload ``spec``; returns its pid."""
        return int(self._ask({"spawn": spec})["pid"])

    def wait(self, pid: int) -> int:
        """Reap a child; returns its raw wait status."""
        return int(self._ask({"wait": pid})["status"])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> Zygote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The kill -9 loop: run a child on a directory, SIGKILL it at a random moment, check, repeat.

One directory takes several kills in a row (reopen, continue, kill again), so recovery from a crash that
happened during an earlier recovery, snapshot, compaction or flush is exercised too. Most kills land
0.05-0.6 s after the child reported READY; one in eight lands at a random moment of its start-up
(while it opens, replays or rebuilds the index).
"""

from __future__ import annotations

import os
import queue
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .checks import Outcome, check_directory, history, parse_log
from .workload import Config, Model
from .zygote import Zygote

__all__ = ["Stats", "plan_iterations", "run_directory", "run_matrix"]


@dataclass
class Stats:
    """Totals over a run of the loop (what the long tier writes to JSON)."""

    iterations: int = 0
    faults_injected: int = 0
    ops_verified: int = 0
    lost: int = 0
    resurrected: int = 0
    duplicates: int = 0
    in_flight_applied: int = 0
    in_flight_absent: int = 0
    child_errors: int = 0
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, out: Outcome, config: Config, where: str) -> None:
        self.ops_verified += out.ops_verified
        self.lost += out.lost
        self.resurrected += out.resurrected
        self.duplicates += out.duplicates
        self.in_flight_applied += out.in_flight_applied
        self.in_flight_absent += out.in_flight_absent
        self.failures.extend(f"[{config.name} {where}] {f}" for f in out.failures)
        self.warnings.extend(f"[{config.name} {where}] {w}" for w in out.warnings)

    def merge(self, other: Stats) -> None:
        for key, value in asdict(other).items():
            if isinstance(value, list):
                getattr(self, key).extend(value)
            else:
                setattr(self, key, getattr(self, key) + value)


_CHECK_LOCK = threading.Lock()


def _wait_ready(log: Path, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if b"READY\n" in log.read_bytes():
                return True
        except OSError:
            pass
        time.sleep(0.005)
    return False


def run_directory(
    zygote: Zygote,
    config: Config,
    data: Path,
    *,
    seed: int,
    kills: int,
    stats: Stats,
    after_kill: Callable[[Path, int], None] | None = None,
) -> Model:
    """Run ``kills`` kill-and-check rounds on one directory; returns the final model.

    Args:
        after_kill: Called with (directory, round) after each kill, before the check (the power-loss
            test damages files here); None for plain kill -9.
    """
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    model: Model = {}
    for round_ in range(kills):
        log_path = data.parent / f"{data.name}-run{round_}.log"
        spec = {
            "dir": str(data),
            "log": str(log_path),
            "seed": rng.randrange(2**31),
            "run": round_,
            "config": asdict(config),
        }
        pid = zygote.spawn(spec)
        if rng.random() < 0.125:
            time.sleep(rng.uniform(0.0, 0.15))
        else:
            if not _wait_ready(log_path):
                os.kill(pid, signal.SIGKILL)
                zygote.wait(pid)
                err = Path(str(log_path) + ".stderr")
                msg = err.read_text() if err.exists() else ""
                stats.failures.append(f"[{config.name} round {round_}] child never got ready: {msg[-2000:]}")
                stats.child_errors += 1
                return model
            time.sleep(rng.uniform(0.05, 0.6))
        os.kill(pid, signal.SIGKILL)
        status = zygote.wait(pid)
        stats.iterations += 1
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            err = Path(str(log_path) + ".stderr")
            msg = err.read_text() if err.exists() else ""
            stats.child_errors += 1
            stats.failures.append(
                f"[{config.name} round {round_}] child ended by itself (status {status}): {msg[-2000:]}"
            )
        stats.faults_injected += 1
        log = parse_log(log_path)
        if log.bg_errors:
            stats.failures.append(f"[{config.name} round {round_}] background errors {log.bg_errors[:3]}")
        if after_kill is not None:
            after_kill(data, round_)
        states, acked = history(model, log)
        with _CHECK_LOCK:  # checks open Embeddix in this process and record warnings: one at a time
            out, observed = check_directory(data, config, states, must_reach=acked, rng=nrng)
        out.ops_verified = len(log.acked)
        stats.add(out, config, f"seed {seed} round {round_}")
        if out.failures or observed is None:
            return model  # the directory is no longer a known state: stop here
        model = observed
    return model


def plan_iterations(total: int, configs: list[Config], kills_per_dir: int) -> list[tuple[Config, int, int]]:
    """Split ``total`` kills over the configurations: (config, directory index, kills) triples."""
    out: list[tuple[Config, int, int]] = []
    for i, config in enumerate(configs):
        left = max(1, total // len(configs) + (i < total % len(configs)))
        d = 0
        while left > 0:
            n = min(kills_per_dir, left)
            out.append((config, d, n))
            left -= n
            d += 1
    return out


def run_matrix(
    root: Path,
    configs: list[Config],
    total: int,
    *,
    kills_per_dir: int = 4,
    seed: int = 0,
    lanes: int = 2,
) -> Stats:
    """The whole loop: ``total`` kills spread over ``configs``, each directory killed ``kills_per_dir``
    times, ``lanes`` directories at a time (a child works on one while the parent checks another)."""
    work: queue.Queue[tuple[int, tuple[Config, int, int]]] = queue.Queue()
    for item in enumerate(plan_iterations(total, configs, kills_per_dir)):
        work.put(item)
    results: list[Stats] = []
    errors: list[BaseException] = []

    def lane(zygote: Zygote) -> None:
        stats = Stats()
        results.append(stats)
        try:
            while True:
                try:
                    i, (config, d, kills) = work.get_nowait()
                except queue.Empty:
                    return
                data = root / f"{config.name}-{d}" / "data"
                data.parent.mkdir(parents=True, exist_ok=True)
                run_directory(zygote, config, data, seed=seed * 100_003 + i, kills=kills, stats=stats)
        except BaseException as exc:
            errors.append(exc)

    zygotes = [Zygote() for _ in range(lanes)]
    try:
        threads = [threading.Thread(target=lane, args=(z,)) for z in zygotes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for z in zygotes:
            z.close()
    if errors:
        raise errors[0]
    total_stats = Stats()
    for s in results:
        total_stats.merge(s)
    return total_stats

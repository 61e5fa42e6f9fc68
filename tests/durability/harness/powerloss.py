"""A power-loss test double for SQLite's WAL: drop, truncate or garble what was never fsynced.

What it models, exactly: after a child is SIGKILLed, the files hold what the OS page cache held. A power
cut additionally loses every write not yet fsynced. With automatic WAL checkpoints off in the child (see
``workload.run_child``) and no ``close()``, the database file is not written during the run and the
``-wal`` file only grows, so the fsynced part of the WAL is a prefix of it:

* ``durability="full"``: SQLite fsyncs the WAL at every commit before the call returns, so the prefix
  is at least the WAL size logged with the last ``ACK`` (``durable_floor``);
* ``durability="normal"``: nothing is fsynced during the run, so any prefix may survive, down to none.

:func:`lose_power` cuts the WAL at a random frame boundary at or above that floor and then, at random,
leaves the cut (the lost writes never reached the disk), fills the rest of the old length with random
bytes or zeros (blocks allocated but never written), or keeps the old bytes with random bits flipped (a
torn multi-block write). The ``-shm`` file is deleted: it is a cache SQLite rebuilds from the WAL, and its
contents do not survive a reboot. Index snapshot files are left as they are: every one of them was
fsynced before its rename and its directory after it, so a power cut leaves them as a kill -9 does.

Not modelled: reordering of writes inside the fsynced prefix, lies by the disk about fsync, and losses in
the database file itself (it is not written while the child runs).
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

__all__ = ["WAL_HEADER", "frame_size", "lose_power"]

WAL_HEADER = 32
FRAME_HEADER = 24


def frame_size(wal: Path) -> int | None:
    """Bytes per WAL frame, from the WAL header (None when the header itself is missing)."""
    head = wal.read_bytes()[:WAL_HEADER] if wal.exists() else b""
    if len(head) < WAL_HEADER:
        return None
    page = struct.unpack(">I", head[8:12])[0]
    if page == 1:
        page = 65536
    return FRAME_HEADER + page


def lose_power(data: Path, durable_floor: int, rng: random.Random) -> str:
    """Simulate a power cut on ``data`` (see the module docstring); returns what was done, for messages.

    Args:
        data: The data directory.
        durable_floor: Bytes of the WAL known to be fsynced (0 when nothing is).
        rng: Source of the random choices.
    """
    wal = data / "embeddix.sqlite3-wal"
    (data / "embeddix.sqlite3-shm").unlink(missing_ok=True)
    if not wal.exists():
        return "no WAL"
    size = wal.stat().st_size
    fsize = frame_size(wal)
    if fsize is None:
        cut = 0 if durable_floor == 0 else size
    else:
        first = WAL_HEADER if durable_floor > 0 else 0
        boundaries = [0] if first == 0 else []
        boundaries += list(range(WAL_HEADER, size + 1, fsize))
        allowed = [b for b in boundaries if b >= durable_floor] or [size]
        cut = rng.choice(allowed)
    old = wal.read_bytes()
    mode = rng.choice(("truncate", "random", "zero", "flip"))
    tail = old[cut:]
    if mode == "random":
        tail = rng.randbytes(len(tail))
    elif mode == "zero":
        tail = bytes(len(tail))
    elif mode == "flip" and tail:
        buf = bytearray(tail)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        tail = bytes(buf)
    else:
        tail = b""
    wal.write_bytes(old[:cut] + tail)
    return f"WAL of {size} bytes cut at {cut} (floor {durable_floor}), tail {mode} ({len(tail)} bytes)"

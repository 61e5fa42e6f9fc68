"""The errors this package adds to the engine's tree (both derive from ``embeddix_core.EmbeddixError``)::

EmbeddixError
├── ShardUnavailableError (ConnectionError)   a shard or the catalog did not answer within the deadline
└── StaleRoutingError                         internal: a call routed by an old table (never surfaces)
"""

from __future__ import annotations

from embeddix_core import EmbeddixError

__all__ = ["ShardUnavailableError", "StaleRoutingError"]


class ShardUnavailableError(EmbeddixError, ConnectionError):
    """A shard (or the catalog) did not answer within the deadline: it is down and Ray did not restart it
    in time (its machine is gone, or its restarts ran out). Whether the call was applied is not known."""


class StaleRoutingError(EmbeddixError):
    """A call was routed by a placement older than the shard's fence: re-read the routing table.

    Internal: the router handles it and never lets it reach a caller.
    """

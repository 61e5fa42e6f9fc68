"""Embeddix on Ray: sharded collections, the embedded engine in every shard actor.

Quick start (``pip install 'embeddix[ray]'``)::

    from embeddix_ray import RayEmbeddix

    with RayEmbeddix.open("/data/embeddix", shards=4, address="auto") as db:
        col = db.get_or_create_collection("agent:alice", dim=384)   # lives whole on one shard
        col.add(ids=["a"], vectors=[[0.1] * 384], documents=["hello"])
        hits = col.search([0.1] * 384, k=10, filter={"tag": 1})

* :class:`RayEmbeddix`: the store handle, with the collection API of :class:`embeddix_core.Embeddix`.
* :class:`RayCollection`: a collection, with the API of :class:`embeddix_core.Collection`.
* :class:`ShardUnavailableError`: a shard did not come back within the call's deadline.

Each shard is an :class:`~embeddix_core.Embeddix` database on its own directory inside a Ray actor; a
collection lives on one shard until it outgrows the size budget, then it is split by id hash over several
and searched scatter-gather with an exact top-k merge. Ray restarts a killed shard, which reopens its
directory (every acknowledged write is there); calls meanwhile are retried within a deadline.

Security: Ray deserialises cloudpickle from its ports, which runs code: never expose a Ray cluster's ports
beyond machines you trust (see the README).
"""

from ._collection import RayCollection
from ._database import RayEmbeddix
from ._errors import ShardUnavailableError

__all__ = ["RayCollection", "RayEmbeddix", "ShardUnavailableError"]

"""The Redis engine: many gateway nodes share sequence numbers, history and snapshots.

Every publication is one Lua script run (see :mod:`tickwire.engine.redis.scripts`): the
channel's epoch is created if missing, its seq incremented, the publication appended to
the channel's stream (entry id ``<seq>-0``, trimmed by size and age), the snapshot of a
state channel stored, TTLs refreshed and the publication PUBLISHed to the nodes — all or
nothing. History is read back with ``XRANGE``.

One module per concern (as centrifuge keeps one file per concern):

- :mod:`~tickwire.engine.redis.url` — engine URLs (``redis://``, ``rediss://``,
  ``unix://``, ``redis+sentinel://``) into a :class:`RedisTarget`;
- :mod:`~tickwire.engine.redis.pool` — the connection pool, which error replies mean
  "not now", the reconnect backoff;
- :mod:`~tickwire.engine.redis.scripts` — the Lua scripts and the runner that calls them
  by SHA;
- :mod:`~tickwire.engine.redis.batcher` — publications of one loop iteration, from every
  publisher of the node, in one pipeline;
- :mod:`~tickwire.engine.redis.pubsub` — the node's pub/sub connection and its loop;
- :mod:`~tickwire.engine.redis.engine` — :class:`RedisEngine`, which composes them;
- :mod:`~tickwire.engine.redis.shards` — :class:`ShardedRedisEngine`: channels placed
  over several Redis servers by rendezvous hashing, one :class:`RedisEngine` per shard.
"""

from tickwire.engine.redis.engine import RedisEngine
from tickwire.engine.redis.shards import ShardedRedisEngine, home_shard, parse_shards
from tickwire.engine.redis.url import RedisTarget, parse_engine_url

__all__ = [
    "RedisEngine",
    "RedisTarget",
    "ShardedRedisEngine",
    "home_shard",
    "parse_engine_url",
    "parse_shards",
]

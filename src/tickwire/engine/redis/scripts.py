"""The Lua scripts of the Redis engine, and :class:`ScriptRunner`, which runs them (by
SHA, loading a script again when Redis lost its cache). Each runs atomically on the
Redis server.

Keys of one channel (both carry the channel in a ``{hash tag}``, so they share a Redis
Cluster slot and one script may touch both):

- ``<prefix>{<channel>}:m`` — a hash: ``e`` epoch, ``s`` last seq, and for state channels
  ``n`` / ``nt`` / ``nd``: the seq, ts and data of the latest snapshot, and ``w`` while a
  fresh snapshot is wanted (a node could not start a subscriber from the stored one). Its TTL is the
  engine's ``meta_ttl`` (long): the epoch and the snapshot outlive the history.
- ``<prefix>{<channel>}:h`` — a stream, one entry per publication, entry id ``<seq>-0``
  (so ``XRANGE key <seq> +`` reads from a seq), fields ``t`` (ts, ms) then ``d`` (data).
  Trimmed to ``size`` entries (exact ``MAXLEN``) and to entries not older than the
  history TTL; the key itself expires after the history TTL without publications.

The epoch is created by whichever script first finds it missing, from a candidate the
client generated (Lua's PRNG is deterministic inside Redis). Creating an epoch deletes
any stream left from an older epoch, so stream ids and seqs always start together; a
stream found ahead of the seq (the seq went back, e.g. after a failover to a lagging
replica) is started again by the next publication rather than failing it.

Pub/sub payload: ``<epoch> <seq> <ts> <data>`` on ``<prefix>:p:<channel>`` (PUBLISH), or
on Redis Cluster on ``<prefix>:p:{<channel>}`` (SPUBLISH: the hash tag puts the shard
channel in the slot of the channel's keys, so only that shard's nodes carry it).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tickwire.engine.base import EngineError, EngineUnavailable
from tickwire.engine.redis.pool import server_refused

__all__ = [
    "CHECK_ITEMS",
    "HISTORY",
    "POSITION",
    "PUBLISH",
    "REQUEST_SNAPSHOT",
    "Call",
    "ScriptRunner",
    "candidate_epoch",
]

# Shared helpers, prepended to every script.
_COMMON = """
local function ensure_epoch(meta, stream, candidate, meta_ttl)
  local epoch = redis.call('HGET', meta, 'e')
  if epoch then return epoch end
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', candidate, 's', 0)
  redis.call('EXPIRE', meta, meta_ttl)
  return candidate
end

-- Drop the oldest entries while their ts is older than cutoff (same rule as the memory
-- engine: the trimmed part is a prefix). Amortised O(1): each entry is removed once.
local function trim_by_age(stream, cutoff)
  local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  if #head == 0 or tonumber(head[1][2][2]) >= cutoff then return end
  while true do
    local batch = redis.call('XRANGE', stream, '-', '+', 'COUNT', 128)
    local n = #batch
    if n == 0 then return end
    for i = 1, n do
      if tonumber(batch[i][2][2]) >= cutoff then
        redis.call('XTRIM', stream, 'MINID', batch[i][1])
        return
      end
    end
    local last = batch[n][1]
    local lseq = string.match(last, '^(%d+)-')
    redis.call('XTRIM', stream, 'MINID', lseq .. '-1')
    if n < 128 then return end
  end
end
"""

#: KEYS: meta, stream[, batch token]. ARGV: 1 data, 2 ts, 3 cutoff (ms; older history is
#: trimmed), 4 history size, 5 history ttl (ms), 6 meta ttl (s), 7 candidate epoch,
#: 8 pub/sub channel, 9 "1" when a snapshot follows, 10 snapshot, 11 "1" to send it with
#: SPUBLISH (Redis Cluster: sharded pub/sub, the channel name shares the keys' slot).
#: Returns {epoch, seq, wanted}: wanted is 1 when a fresh snapshot is asked for.
#: Inside a batch (KEYS[3], see CHECK_BATCH) it writes nothing unless the token exists.
PUBLISH = (
    _COMMON
    + """
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 0 then
  return redis.error_reply('TWBATCH not published: another item of its batch was refused')
end
local meta, stream = KEYS[1], KEYS[2]
local meta_ttl = ARGV[6]
local epoch = ensure_epoch(meta, stream, ARGV[7], meta_ttl)
local seq = tonumber(redis.call('HGET', meta, 's') or '0') + 1
local ts = ARGV[2]
local size = tonumber(ARGV[4])
if size > 0 then
  -- the first write: if Redis refuses it (out of memory), nothing was written
  local id = seq .. '-0'
  local added = redis.pcall('XADD', stream, 'MAXLEN', size, id, 't', ts, 'd', ARGV[1])
  if type(added) == 'table' and added.err then
    if not string.find(added.err, 'equal or smaller', 1, true) then
      return redis.error_reply(added.err)
    end
    -- the stream is ahead of the seq (the meta went back: a failover to a lagging
    -- replica, or tampering): its history cannot be trusted, start it again
    redis.call('DEL', stream)
    redis.call('XADD', stream, 'MAXLEN', size, id, 't', ts, 'd', ARGV[1])
  end
  trim_by_age(stream, tonumber(ARGV[3]))
  redis.call('PEXPIRE', stream, ARGV[5])
end
local wanted = 0
if ARGV[9] == '1' then
  redis.call('HSET', meta, 's', seq, 'n', seq, 'nt', ts, 'nd', ARGV[10])
  redis.call('HDEL', meta, 'w')
else
  redis.call('HSET', meta, 's', seq)
  if redis.call('HEXISTS', meta, 'w') == 1 then wanted = 1 end
end
redis.call('EXPIRE', meta, meta_ttl)
local publish = 'PUBLISH'
if ARGV[11] == '1' then publish = 'SPUBLISH' end
redis.call(publish, ARGV[8], epoch .. ' ' .. seq .. ' ' .. ts .. ' ' .. ARGV[1])
return {epoch, seq, wanted}
"""
)

# The key check CHECK_BATCH and CHECK_ITEMS share.
_CHECK_ITEMS = """
for i = 2, #KEYS, 2 do
  local mt = redis.call('TYPE', KEYS[i]).ok
  local st = redis.call('TYPE', KEYS[i + 1]).ok
  if (mt ~= 'none' and mt ~= 'hash') or (st ~= 'none' and st ~= 'stream') then
    return i / 2
  end
  if mt == 'hash' then
    local seq = redis.call('HGET', KEYS[i], 's')
    if seq and not tonumber(seq) then return i / 2 end
  end
end
"""

#: The first command of a ``publish_many`` transaction. KEYS: the batch token, then each
#: item's meta and stream. Checks every item as its PUBLISH will find it (a meta that is
#: a hash or absent with a numeric seq, a stream that is a stream or absent) and only
#: then sets the token every PUBLISH of the batch requires (the transaction deletes it at
#: its end). Returns 0 when all pass, else the 1-based index of the first item refused;
#: if Redis refuses the token itself (out of memory) the script fails: nothing is set.
#: Either way a refused batch writes nothing.
CHECK_BATCH = (
    _CHECK_ITEMS
    + """
redis.call('SET', KEYS[1], 1)
return 0
"""
)

#: The same check, writing nothing (KEYS[1] is unused): a sharded engine's
#: ``publish_many`` runs it on every shard of the batch before publishing anything
#: (:mod:`tickwire.engine.redis.shards`). Returns 0 or the first refused item's index.
CHECK_ITEMS = _CHECK_ITEMS + "\nreturn 0\n"

#: KEYS: meta, stream. ARGV: 1 candidate epoch, 2 meta ttl (s). Returns {epoch, seq}.
POSITION = (
    _COMMON
    + """
local epoch = ensure_epoch(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
return {epoch, tonumber(redis.call('HGET', KEYS[1], 's') or '0')}
"""
)

#: KEYS: meta, stream. ARGV: 1 candidate epoch, 2 meta ttl (s). Marks a fresh snapshot
#: as wanted; the next publication without one answers wanted = 1.
REQUEST_SNAPSHOT = (
    _COMMON
    + """
ensure_epoch(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[1], 'w', 1)
return 1
"""
)

#: KEYS: meta, stream. ARGV: 1 since epoch, 2 since seq, 3 limit (-1: none),
#: 4 cutoff (ms), 5 history size, 6 candidate epoch, 7 meta ttl (s).
#: Returns {epoch, seq, recovered (0/1), entries} — entries as XRANGE returns them.
HISTORY = (
    _COMMON
    + """
local meta, stream = KEYS[1], KEYS[2]
local epoch = ensure_epoch(meta, stream, ARGV[6], ARGV[7])
local seq = tonumber(redis.call('HGET', meta, 's') or '0')
local since = tonumber(ARGV[2])
if ARGV[1] ~= epoch or since > seq then return {epoch, seq, 0, {}} end
local missed = seq - since
if missed == 0 then return {epoch, seq, 1, {}} end
local limit = tonumber(ARGV[3])
if (limit >= 0 and missed > limit) or missed > tonumber(ARGV[5]) then
  return {epoch, seq, 0, {}}
end
trim_by_age(stream, tonumber(ARGV[4]))
local first = (since + 1) .. '-0'
local entries = redis.call('XRANGE', stream, first, '+')
if #entries ~= missed or entries[1][1] ~= first then return {epoch, seq, 0, {}} end
return {epoch, seq, 1, entries}
"""
)


#: One script call: its keys and its arguments.
Call = tuple[list[str], list[Any]]


def candidate_epoch() -> str:
    """8 random hex characters, the epoch a script creates if the channel has none. Sent
    with every call, used rarely: the PRNG (seeded from the OS) saves a syscall."""
    return f"{random.getrandbits(32):08x}"


class ScriptRunner:
    """Runs the scripts on one Redis client and turns its failures into engine errors
    (naming ``where``, the redacted URL)."""

    def __init__(self, client: Any, where: str, *, cluster: bool = False) -> None:
        #: ``aioredis.Redis``, or ``RedisCluster`` when ``cluster``
        self.client = client
        self.cluster = cluster
        self.where = where
        self._sha: dict[str, str] = {}

    def unavailable(self, exc: BaseException, what: str) -> EngineUnavailable:
        return EngineUnavailable(f"Redis engine at {self.where} is unavailable ({what}): {exc}")

    def error(self, exc: BaseException, what: str) -> EngineError:
        if server_refused(exc):
            return self.unavailable(exc, what)
        return EngineError(f"Redis engine {what} failed: {exc}")

    async def eval(self, name: str, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run ``script`` (cached by ``name``) once."""
        sha = self._sha.get(name)
        client = self.client
        try:
            if sha is not None:
                try:
                    return await client.evalsha(sha, len(keys), *keys, *args)
                except NoScriptError:
                    pass  # Redis restarted or its script cache was flushed: load again
            sha = await client.script_load(script)
            self._sha[name] = sha
            return await client.evalsha(sha, len(keys), *keys, *args)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise self.unavailable(exc, name) from exc
        except ResponseError as exc:
            raise self.error(exc, name) from exc

    async def publish_batch(self, calls: list[Call]) -> list[Any]:
        """Run the publish script once per call, all written to one connection at once
        and the replies read back in order: the batcher's path, with none of the
        per-command work of a redis-py pipeline (no MULTI, no reply callbacks). Returns
        each call's result or its error reply; a failure of the connection raises."""
        if self.cluster:  # calls for several masters: redis-py groups them by node
            return await self.publish_pipeline(calls, transaction=False)
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            try:
                sha = self._sha.get("publish")
                if sha is None:
                    sha = self._sha["publish"] = await self.client.script_load(PUBLISH)
                missing = await self._send_and_read(sha, calls, todo, results)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                raise self.unavailable(exc, "publish") from exc
            if not missing or attempt == 1:
                break
            # Redis restarted or its script cache was flushed: these did not run
            self._sha.pop("publish", None)
            todo = missing
        return results

    async def _send_and_read(
        self, sha: str, calls: list[Call], todo: list[int], results: list[Any]
    ) -> list[int]:
        pool = self.client.connection_pool
        conn = await pool.get_connection()
        healthy = False
        try:
            commands = []
            for i in todo:
                keys, args = calls[i]
                commands.append(("EVALSHA", sha, len(keys), *keys, *args))
            await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
            missing = []
            for i in todo:
                try:
                    results[i] = await conn.read_response()
                except NoScriptError as exc:
                    results[i] = exc
                    missing.append(i)
                except ResponseError as exc:  # this call's error reply; the rest follow
                    results[i] = exc
            healthy = True
            return missing
        finally:
            if not healthy:  # replies may be left unread: the connection cannot be reused
                await conn.disconnect(nowait=True)
            await pool.release(conn)

    async def publish_transaction(
        self, channels: Sequence[str], calls: list[Call], token: str
    ) -> list[Any]:
        """Run the publish script once per call in one MULTI/EXEC, all or nothing.

        Inside a transaction Redis runs every command even when one fails, and a script
        that fails keeps what it wrote: a batch with one item Redis refuses (its key of
        the wrong type, a corrupt seq) would be published without that item. So the
        transaction starts with :data:`CHECK_BATCH`, which checks every item's keys as
        its script will find them and only then sets the batch token (``token``) each
        script of the batch requires: a refused item means none written (raised as
        :class:`EngineError` naming it), a refused token (out of memory) none either."""
        check_keys = [token] + [key for keys, _ in calls for key in keys]
        for _attempt in range(2):
            try:
                sha = self._sha.get("publish")
                if sha is None:
                    sha = self._sha["publish"] = await self.client.script_load(PUBLISH)
                check = self._sha.get("check_batch")
                if check is None:
                    check = self._sha["check_batch"] = await self.client.script_load(CHECK_BATCH)
                async with self.client.pipeline(transaction=True) as pipe:
                    pipe.execute_command("EVALSHA", check, len(check_keys), *check_keys)
                    for keys, args in calls:
                        pipe.execute_command("EVALSHA", sha, len(keys) + 1, *keys, token, *args)
                    pipe.delete(token)
                    replies = await pipe.execute(raise_on_error=False)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                raise self.unavailable(exc, "publish_many") from exc
            except ResponseError as exc:
                raise self.error(exc, "publish_many") from exc
            checked, results = replies[0], list(replies[1:-1])
            if isinstance(checked, NoScriptError) or any(
                isinstance(r, NoScriptError) for r in results
            ):
                # Redis restarted or its script cache was flushed: without the check no
                # token was set, without the publish script nothing ran; load them again
                self._sha.pop("publish", None)
                self._sha.pop("check_batch", None)
                continue
            if isinstance(checked, Exception):
                raise self.error(checked, "publish_many")
            if checked:
                raise EngineError(
                    f"Redis engine publish_many refused item {checked} of {len(calls)} "
                    f"({channels[int(checked) - 1]!r}): its keys are not this engine's "
                    "(wrong type, or a seq that is not a number); nothing of the batch "
                    "was published"
                )
            failed = [i for i, r in enumerate(results) if isinstance(r, Exception)]
            if failed:
                # (a refusal that began inside the transaction, e.g. memory running out
                # after the check: the items before it are out)
                done = [channels[i] for i in range(len(calls)) if i not in failed]
                first = results[failed[0]]
                raise EngineError(
                    f"Redis engine publish_many: item {failed[0] + 1} of {len(calls)} failed "
                    f"({first}); published nonetheless: {', '.join(done) or 'none'}"
                ) from first
            return results
        raise EngineError("Redis engine: script cache flushed twice during publish_many")

    async def publish_pipeline(self, calls: list[Call], *, transaction: bool) -> list[Any]:
        """Run the publish script once per call in one round trip; returns each call's
        result or its error reply (a failure of the connection raises)."""
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            try:
                sha = self._sha.get("publish")
                if sha is None:
                    sha = self._sha["publish"] = await self.client.script_load(PUBLISH)
                async with self.client.pipeline(transaction=transaction) as pipe:
                    for i in todo:
                        keys, args = calls[i]
                        pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
                    replies = await pipe.execute(raise_on_error=False)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                raise self.unavailable(exc, "publish") from exc
            except ResponseError as exc:
                raise self.error(exc, "publish") from exc
            missing = []
            for i, reply in zip(todo, replies, strict=True):
                results[i] = reply
                if isinstance(reply, NoScriptError):
                    missing.append(i)
            if not missing or attempt == 1:
                break
            # Redis restarted or its script cache was flushed: these did not run
            self._sha.pop("publish", None)
            if transaction and len(missing) != len(todo):
                raise EngineError("Redis engine: script cache flushed inside a transaction")
            todo = missing
        return results

"""The Lua scripts ``RedisStore`` runs, and the names of the keys they touch.

Key layout. A script's keys must live in one hash slot on a Redis or Valkey cluster, so every
connection counter of a route shares the hash tag ``{<prefix>conn:<route>}``; a reused-key
record and each rate window is one key, free to land anywhere. The same layout is used on a
single server, so moving to a cluster changes nothing.

Every script is safe to run twice for the same call (the store retries once on a fresh
connection when a pooled one turns out dead, and cannot tell whether the first attempt ran):
a remembered key carries the token of the call that stored it, and a lease id is a sorted-set
member, so a second ``acquire`` of the same lease neither counts it twice nor refuses it.

Only commands Redis (5 or later) and Valkey share: GET, SET, ZADD, ZREM, ZCARD, ZSCORE,
ZREMRANGEBYSCORE, PTTL, PEXPIRE, TIME. TIME inside a script needs effect replication, the
default since Redis 5 and in Valkey.
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "REFRESH", "RELEASE", "REMEMBER", "conn_key", "key_name"]


def conn_key(prefix: str, name: str) -> tuple[str, str]:
    """The (hash tag, key) of the connection counter ``name``.

    Names are ``<route>:<rest>`` (``default:total``, ``/chat/*:client:203.0.113.7``); the
    part before the first ':' picks the slot, so one route's counters share it. Any braces in
    the prefix or route are harmless: the keys of one route agree up to their first '}', so
    Redis hashes the same tag for all of them.
    """
    route, sep, rest = name.partition(":")
    tag = f"{{{prefix}conn:{route}}}"
    return tag, f"{tag}{sep}{rest}"


def key_name(prefix: str, key: str) -> str:
    """Where a handshake key is remembered."""
    return f"{prefix}key:{key}"


# KEYS[1]: the record; ARGV: this call's token, ttl in ms. Returns 1 when another call had
# already remembered the key, else 0 (also when the record holds this call's own token: a
# retry after the first attempt's reply was lost).
REMEMBER = """
local held = redis.call('GET', KEYS[1])
if held then
  if held == ARGV[1] then
    return 0
  end
  return 1
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 0
"""

# KEYS: the sorted sets (one hash tag); ARGV: lease ttl in ms, lease id, then one cap per
# key. Returns 0 when the lease was added to every set, else the 1-based index of a full
# set. The lease itself never counts against its own cap (a retried acquire).
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local held = redis.call('ZCARD', key)
  if redis.call('ZSCORE', key, ARGV[2]) then
    held = held - 1
  end
  if held >= tonumber(ARGV[i + 2]) then
    return i
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, ARGV[2])
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end
return 0
"""

# KEYS: sorted sets (one hash tag); ARGV: lease ttl in ms, then the lease id for each key.
# Sweeps expired leases (a crashed worker's) and re-adds missing live ones (a restarted,
# emptied Redis, or a failover that lost the last writes, counts the live connections again).
REFRESH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  redis.call('ZADD', key, now + ttl, ARGV[i + 1])
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end
return #KEYS
"""

# KEYS: the lease's sorted sets (one hash tag); ARGV[1]: the lease id.
RELEASE = """
for _, key in ipairs(KEYS) do
  redis.call('ZREM', key, ARGV[1])
end
return #KEYS
"""

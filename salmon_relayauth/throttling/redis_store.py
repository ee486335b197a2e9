"""Throttling state in Redis, shared by every relay node that points at the same server.

Each :meth:`RedisThrottleStore.consume` is **one round trip**: an ``EVALSHA`` of the Lua script
below, which runs the GCRA of :mod:`salmon_relayauth.engine.gcra` for every limit and writes the
new TATs only if every non-shadow limit allows.

*Why a script.* A check is read-decide-write over several keys. Done from the client (GET, then
SET) two nodes could both read the same TAT and both let a message through, and a failure between
two SETs would charge some limits and not others. Redis runs a script atomically, so the
all-or-nothing rule of :class:`~salmon_relayauth.throttling.base.ThrottleStore` holds across nodes,
and it costs one round trip however many limits there are.

*Why the server's clock.* TATs are absolute times. If each node used its own clock, a node whose
clock is one second behind would see every TAT one second further away (and refuse), a node ahead
would let bursts through. The script reads ``redis.call('TIME')`` (microseconds), so every node is
judged against one clock; the nodes' clocks never matter.

All the keys of one check go to one script on one server (not Redis Cluster, where they would have
to share a hash slot). Keys expire on their own: each TAT is written with an expiry at that TAT plus a margin, after which
the key holds nothing a fresh key would not (a TAT in the past means "no debt").

While Redis cannot be reached (or times out, or answers with an error), ``consume`` raises
:class:`~salmon_relayauth.throttling.base.ThrottleUnavailable` naming the server (never its
password); :class:`~salmon_relayauth.throttling.gate.ThrottleGate` then applies the connector's
``throttling_backend_failure``. Nothing is cached about the failure: the next call tries Redis again,
on a new connection, so the shared limits come back as soon as Redis does.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as BrokenConnection
from redis.exceptions import RedisError

from ..model.limits import RateLimit, RateVerdict
from .base import ThrottleUnavailable

__all__ = ["CONSUME_SCRIPT", "EXPIRE_MARGIN_MS", "RedisThrottleStore", "redact_url"]

EXPIRE_MARGIN_MS = 100
"""How long a key outlives its TAT (it would be harmless to drop it at the TAT itself)."""

CONSUME_SCRIPT = """
-- GCRA over several limits, all or nothing (salmon_relayauth.engine.gcra, in microseconds).
-- KEYS[i]: the key of limit i. ARGV[3i-2], ARGV[3i-1], ARGV[3i]: its per_minute, burst and
-- shadow flag ('1' or '0'). Returns {refused, retry_after_us, shadowed}:
--   refused: index (from 1) of the first non-shadow limit that refuses, 0 when all allow;
--   retry_after_us: microseconds until that limit allows one more (0 when none refused);
--   shadowed: index of the first shadow limit that would have refused, 0 for none.
-- Nothing is written unless refused is 0; then every allowing limit's new TAT is set, expiring
-- at that TAT plus ARGV[3n+1] milliseconds. A TAT is stored as microseconds of the server's clock,
-- written with 17 significant digits so that it reads back as the same double.
if redis.replicate_commands then redis.replicate_commands() end -- TIME before writes (Redis < 5)
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tats, shadowed = {}, 0
for i, key in ipairs(KEYS) do
  local interval = 60000000 / tonumber(ARGV[3 * i - 2])
  local tolerance = interval * (tonumber(ARGV[3 * i - 1]) - 1)
  local tat = tats[key] or tonumber(redis.call('GET', key))
  local start = now
  if tat and tat > now then start = tat end
  local new_tat = start + interval
  local allowed_at = new_tat - tolerance - interval
  if allowed_at > now + 1 then -- 1 us: doubles near 1.7e15 us are exact to 0.25 us
    if ARGV[3 * i] ~= '1' then return {i, math.ceil(allowed_at - now), 0} end
    if shadowed == 0 then shadowed = i end
  else
    tats[key] = new_tat
  end
end
local margin = tonumber(ARGV[3 * #KEYS + 1])
for key, tat in pairs(tats) do
  redis.call('SET', key, string.format('%.17g', tat), 'PX', math.ceil((tat - now) / 1000) + margin)
end
return {0, 0, shadowed}
"""


def redact_url(url: str) -> str:
    """The URL without its password (and without a query string, which may carry one)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


class RedisThrottleStore:
    """A :class:`~salmon_relayauth.throttling.base.ThrottleStore` in Redis (see the module docstring).

    :param url: ``redis://[[user]:password@]host:port/db``, ``rediss://...`` or ``unix:///path``.
    :param socket_timeout: seconds to wait for a connection or an answer before the store counts as
        unavailable (a check sits in the SMTP dialogue, so this stays short).
    """

    def __init__(self, url: str, *, socket_timeout: float = 0.5) -> None:
        self.name = redact_url(url)
        # One immediate retry on a new connection when the connection broke (a pooled connection to
        # a server that has restarted since); none after a timeout, when the script may have run and
        # a retry would charge twice.
        self._client = Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(BrokenConnection,)),
        )
        self._script = self._client.register_script(CONSUME_SCRIPT)  # EVALSHA; SCRIPT LOAD on NOSCRIPT

    async def consume(self, limits: Sequence[RateLimit]) -> RateVerdict:
        if not limits:
            return RateVerdict()
        args: list[int] = []
        for limit in limits:
            args += (limit.per_minute, limit.burst, int(limit.shadow))
        args.append(EXPIRE_MARGIN_MS)
        try:
            refused, retry_after_us, shadowed = await self._script(keys=[limit.key for limit in limits], args=args)
        except (RedisError, OSError) as error:
            raise ThrottleUnavailable(f"Redis at {self.name}: {type(error).__name__}: {error}") from error
        if refused:
            return RateVerdict(limits[int(refused) - 1], int(retry_after_us) / 1_000_000)
        if shadowed:
            return RateVerdict(limits[int(shadowed) - 1], 0.0)
        return RateVerdict()

    @property
    def client(self) -> Redis:
        """The Redis client the store uses (for diagnostics and ``bench/throttle.py``)."""
        return self._client

    async def close(self) -> None:
        await self._client.aclose()

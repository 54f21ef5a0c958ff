"""Who is in each workspace, across the cluster: per workspace, on how many instances each user
has a connection (a hash), kept with one hash per instance of its own users, so that survivors
can subtract a stopped instance's users. Each change is one idempotent Lua script call.

Presence changes are queued and sent by one task; after a Redis outage (Redis may have
restarted empty) this instance states everything it has again and withdraws what it no longer
has.
"""

from __future__ import annotations

import asyncio
import logging

from redis.typing import EncodableT

from .base import BrokerListener
from .keys import Keys
from .link import FAILURES, RedisLink, byte_strings, hash_fields

log = logging.getLogger("server.broker")

# KEYS: instance presence hash, workspace presence hash. ARGV: field, user id, 1|0, name.
# Idempotent: returns -1 when this instance's contribution does not change, else the number of
# instances where the user is now connected.
_SET_PRESENT = """
local had = redis.call('HEXISTS', KEYS[1], ARGV[1])
local want = tonumber(ARGV[3])
if had == want then return -1 end
if want == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local n = redis.call('HINCRBY', KEYS[2], ARGV[2], want == 1 and 1 or -1)
if n <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  n = 0
end
return n
"""


def _field(workspace_id: str, user_id: str) -> str:
    return f"{workspace_id}\x00{user_id}"


def _unfield(field: bytes) -> tuple[str, str]:
    workspace_id, _, user_id = field.decode().partition("\x00")
    return workspace_id, user_id


class ClusterPresence:
    def __init__(self, link: RedisLink, keys: Keys, instance_id: str) -> None:
        self.link = link
        self.keys = keys
        self.instance_id = instance_id
        self._set_present = link.commands.register_script(_SET_PRESENT)
        self._present: dict[tuple[str, str], str] = {}  # what this instance has: -> name
        self._dirty: dict[tuple[str, str], tuple[str, bool]] = {}  # what Redis has not been told
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def set_present(self, workspace_id: str, user_id: str, name: str, present: bool) -> None:
        key = (workspace_id, user_id)
        if present:
            self._present[key] = name
        else:
            self._present.pop(key, None)
        self._dirty[key] = (name, present)
        self._idle.clear()
        self._ready.set()

    @property
    def users(self) -> int:
        return len(self._present)

    async def online(self, workspace_id: str) -> set[str] | None:
        try:
            users = byte_strings(await self.link.commands.hkeys(self.keys.workspace_presence(workspace_id)))
        except FAILURES as exc:
            self.link.failed(exc)
            return None
        return {user.decode() for user in users}

    async def drain(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=timeout)
        except TimeoutError:
            log.warning("shutdown: %d presence changes not sent to Redis", len(self._dirty))

    def restate(self) -> None:
        """After an outage: state everything this instance has again, and withdraw what Redis
        still holds for it but it no longer has."""
        for key, name in self._present.items():
            self._dirty.setdefault(key, (name, True))
        self.link.spawn(self._forget_stale(), name="broker-presence-stale")
        self._idle.clear()
        self._ready.set()

    async def _forget_stale(self) -> None:
        try:
            fields = hash_fields(
                await self.link.commands.hgetall(self.keys.instance_presence(self.instance_id))
            )
        except FAILURES:
            return
        for field, name in fields.items():
            key = _unfield(field)
            if key not in self._present:
                self._dirty.setdefault(key, (name.decode(), False))
        self._idle.clear()
        self._ready.set()

    async def run(self, listener: BrokerListener) -> None:
        """The sending task: each change the cluster's view takes is told to ``listener``."""
        delay = 0.1
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._dirty:
                key, (name, present) = next(iter(self._dirty.items()))
                try:
                    count = await self.apply(self.instance_id, *key, name, present)
                except FAILURES as exc:
                    delay = await self.link.wait_after(exc, delay)
                    continue
                delay = 0.1
                self.link.ok()
                if self._dirty.get(key) == (name, present):
                    del self._dirty[key]
                announce(listener, key[0], key[1], name, present, count)
            self._idle.set()

    async def apply(self, instance_id: str, workspace_id: str, user_id: str, name: str, present: bool) -> int:
        """Set one instance's contribution; returns the instances the user is now on (-1: no change)."""
        keys = [self.keys.instance_presence(instance_id), self.keys.workspace_presence(workspace_id)]
        args: list[EncodableT] = [_field(workspace_id, user_id), user_id, int(present), name]
        return int(await self._set_present(keys=keys, args=args))

    async def withdraw(self, instance_id: str, listener: BrokerListener) -> int:
        """A stopped instance's users leave; returns how many it had."""
        fields = hash_fields(await self.link.commands.hgetall(self.keys.instance_presence(instance_id)))
        for field, name in fields.items():
            workspace_id, user_id = _unfield(field)
            count = await self.apply(instance_id, workspace_id, user_id, name.decode(), False)
            announce(listener, workspace_id, user_id, name.decode(), False, count)
        return len(fields)


def announce(
    listener: BrokerListener, workspace_id: str, user_id: str, name: str, present: bool, count: int
) -> None:
    """Tell the listener when a change made the user's first or last connection in the cluster."""
    if (present and count == 1) or (not present and count == 0):
        listener.presence_changed(workspace_id, user_id, name, present)

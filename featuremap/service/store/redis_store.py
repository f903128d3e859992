"""The template bank in Redis, shared by several replicas.

Each template is one hash; a sorted set keeps creation order; a counter
numbers templates and another versions the bank. Creating and deleting are
Lua scripts, which Redis runs whole or not at all, so a replica that dies
mid-write leaves no partial template. Every change is published on a
channel; each replica listens and also polls the version twice a second (a
missed message costs at most that), then brings its bank up to date.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

from ..errors import Unavailable
from .templates import StoredTemplate, StoreError, Version, from_row, to_row

log = logging.getLogger("featuremap.redis")

_PREFIX = "featuremap:"
_ORDER = _PREFIX + "order"
_SEQ = _PREFIX + "seq"
_VERSION = _PREFIX + "version"
_CHANNEL = _PREFIX + "changes"
_EPOCH = _PREFIX + "epoch"
_POLL = 0.5

# Both return the bank's version after the write (the add also the template's
# sequence number), so the writer can order its own write among snapshots;
# both start an epoch when the keys are gone (a Redis that lost its data
# counts its versions from 0 again).
_EPOCH_LUA = """
local epoch = redis.call('GET', KEYS[6])
if not epoch then
  local now = redis.call('TIME')
  epoch = now[1] .. '.' .. now[2]
  redis.call('SET', KEYS[6], epoch)
end
"""

_ADD = _EPOCH_LUA + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('HSET', KEYS[1], 'seq', seq)
redis.call('ZADD', KEYS[2], seq, ARGV[1])
local version = redis.call('INCR', KEYS[4])
redis.call('PUBLISH', KEYS[5], 'add:' .. ARGV[1])
return {seq, version, epoch}
"""

_DELETE = _EPOCH_LUA + """
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
local version = redis.call('INCR', KEYS[4])
redis.call('PUBLISH', KEYS[5], 'delete:' .. ARGV[1])
return {version, epoch}
"""


def _safe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, credentials = head.partition("://")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user + ':***' if user else '***'}@{tail}"


@contextmanager
def _unavailable(url: str) -> Iterator[None]:
    """Redis failing mid-call is UNAVAILABLE to the caller (the write either happened whole or not at all)."""
    try:
        yield
    except redis.RedisError as error:
        raise Unavailable(f"the bank's Redis ({_safe(url)}) is unavailable: {error}; retry later") from None


def _key(template_id: str) -> str:
    return f"{_PREFIX}template:{template_id}"


class RedisStore:
    """The bank's templates in a Redis database, with change notifications: a :class:`~.templates.TemplateStore`.

    Parameters
    ----------
    url : str
        redis://host:port/db
    """

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self._redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
            self._redis.ping()
        except (redis.RedisError, ValueError) as error:
            raise StoreError(f"cannot reach the bank at {_safe(url)}: {error}") from None
        self._add = self._redis.register_script(_ADD)
        self._delete = self._redis.register_script(_DELETE)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def close(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(5)
        self._redis.close()

    def add(self, template: StoredTemplate) -> tuple[StoredTemplate, Version]:
        """Store a template atomically; KeyError if the id exists."""
        fields = to_row(template)
        args = [template.id] + [item for pair in fields.items() for item in pair]
        with _unavailable(self.url):
            done = self._add(keys=[_key(template.id), _ORDER, _SEQ, _VERSION, _CHANNEL, _EPOCH], args=args)
        if not done:
            raise KeyError(template.id)
        seq, version, epoch = done
        return template.numbered(int(seq)), Version(epoch.decode(), int(version))

    def delete(self, template_id: str) -> Version | None:
        with _unavailable(self.url):
            done = self._delete(keys=[_key(template_id), _ORDER, _SEQ, _VERSION, _CHANNEL, _EPOCH],
                                args=[template_id])
        if not done:
            return None
        version, epoch = done
        return Version(epoch.decode(), int(version))

    def load(self) -> list[StoredTemplate]:
        """Every template, in creation order."""
        return self.fetch(list(self.snapshot()[1]))

    def fetch(self, ids: list[str]) -> list[StoredTemplate]:
        """These templates (those still there), in the given order."""
        with _unavailable(self.url):
            pipe = self._redis.pipeline(transaction=False)
            for template_id in ids:
                pipe.hgetall(_key(template_id))
            rows = pipe.execute()
        # A template deleted between the two reads has no fields: skip it.
        return [from_row(tid, int(fields[b"seq"]), {key.decode(): value for key, value in fields.items()})
                for tid, fields in zip(ids, rows, strict=True) if fields]

    def snapshot(self) -> tuple[Version, dict[str, int]]:
        """The bank's version and every template id with its sequence number, read in one transaction."""
        with _unavailable(self.url):
            pipe = self._redis.pipeline(transaction=True)
            pipe.get(_EPOCH)
            pipe.get(_VERSION)
            pipe.zrange(_ORDER, 0, -1, withscores=True)
            epoch, version, members = pipe.execute()
        return Version((epoch or b"").decode(), int(version or 0)), \
            {member.decode(): int(score) for member, score in members}

    def watch(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change`` (from a background thread) whenever another client changes the bank."""

        def run() -> None:
            seen = None
            pubsub = None
            while not self._stopped.is_set():
                try:
                    if pubsub is None:
                        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                        pubsub.subscribe(_CHANNEL)
                    message = pubsub.get_message(timeout=_POLL)
                    version = self._redis.mget(_EPOCH, _VERSION)  # a new epoch may restart the count
                    if message is not None or version != seen:
                        seen = version
                        on_change()
                except (redis.RedisError, Unavailable) as error:
                    log.warning("redis unavailable; retrying", extra={"error": str(error)})
                    pubsub = None
                    self._stopped.wait(_POLL)

        self._thread = threading.Thread(target=run, name="featuremap-redis-watch", daemon=True)
        self._thread.start()

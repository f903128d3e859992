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
from collections.abc import Callable

import redis

from .templates import StoredTemplate, from_row, to_row

log = logging.getLogger("featuremap.redis")

_PREFIX = "featuremap:"
_ORDER = _PREFIX + "order"
_SEQ = _PREFIX + "seq"
_VERSION = _PREFIX + "version"
_CHANNEL = _PREFIX + "changes"
_POLL = 0.5

_ADD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('HSET', KEYS[1], 'seq', seq)
redis.call('ZADD', KEYS[2], seq, ARGV[1])
redis.call('INCR', KEYS[4])
redis.call('PUBLISH', KEYS[5], 'add:' .. ARGV[1])
return seq
"""

_DELETE = """
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('INCR', KEYS[3])
redis.call('PUBLISH', KEYS[4], 'delete:' .. ARGV[1])
return 1
"""


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
        self._redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self._redis.ping()
        self._add = self._redis.register_script(_ADD)
        self._delete = self._redis.register_script(_DELETE)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def close(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(5)
        self._redis.close()

    def add(self, template: StoredTemplate) -> StoredTemplate:
        """Store a template atomically; KeyError if the id exists."""
        fields = to_row(template)
        args = [template.id] + [item for pair in fields.items() for item in pair]
        seq = self._add(keys=[_key(template.id), _ORDER, _SEQ, _VERSION, _CHANNEL], args=args)
        if not seq:
            raise KeyError(template.id)
        return template.numbered(int(seq))

    def delete(self, template_id: str) -> bool:
        return bool(self._delete(keys=[_key(template_id), _ORDER, _VERSION, _CHANNEL], args=[template_id]))

    def load(self) -> list[StoredTemplate]:
        """Every template, in creation order."""
        return self.fetch([member.decode() for member in self._redis.zrange(_ORDER, 0, -1)])

    def fetch(self, ids: list[str]) -> list[StoredTemplate]:
        """These templates (those still there), in the given order."""
        pipe = self._redis.pipeline(transaction=False)
        for template_id in ids:
            pipe.hgetall(_key(template_id))
        # A template deleted between the two reads has no fields: skip it.
        return [from_row(tid, int(fields[b"seq"]), {key.decode(): value for key, value in fields.items()})
                for tid, fields in zip(ids, pipe.execute()) if fields]

    def ids(self) -> dict[str, int]:
        """Every template id with its sequence number."""
        return {member.decode(): int(score) for member, score in self._redis.zrange(_ORDER, 0, -1, withscores=True)}

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
                    version = self._redis.get(_VERSION)
                    if message is not None or version != seen:
                        seen = version
                        on_change()
                except redis.RedisError as error:
                    log.warning("redis unavailable; retrying", extra={"error": str(error)})
                    pubsub = None
                    self._stopped.wait(_POLL)

        self._thread = threading.Thread(target=run, name="featuremap-redis-watch", daemon=True)
        self._thread.start()

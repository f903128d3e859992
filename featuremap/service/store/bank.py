"""The template bank: validated templates in memory, persisted by a :class:`TemplateStore`.

Every change goes to the store first and to memory after, so what a client
was told exists does exist on disk. What the engine prepares from the
templates is kept apart, in ``prepared``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import numpy as np

from ..engine import calibrated_threshold, check_template
from ..errors import AlreadyExists, FailedPrecondition, InvalidArgument, LimitExceeded, NotFound, Unavailable
from .templates import StoredTemplate, TemplateStore, Version
from .variants import check_pose, check_steps

log = logging.getLogger("featuremap.bank")

_ID = re.compile(r"[a-z][a-z0-9-]{0,62}")
MAX_LABELS = 64
# Locks that serialise writes to one id, shared by ids with the same hash.
_WRITE_STRIPES = 64
_PREFIX = "templates/"


def shown(text: str, limit: int = 80) -> str:
    """``text`` as an error message may echo it: quoted, cut to ``limit`` characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def template_id_of(name: str) -> str:
    """The id in ``templates/{id}`` (or a bare id)."""
    tid = name[len(_PREFIX):] if name.startswith(_PREFIX) else name
    if not _ID.fullmatch(tid):  # fullmatch: "$" would let a trailing newline through
        raise InvalidArgument(
            f"{shown(name)} is not a template name: use templates/{{id}} with an id of 1-63 characters of a-z, "
            "0-9 and '-', starting with a letter"
        )
    return tid


def name_of(template_id: str) -> str:
    return _PREFIX + template_id


def _etag(image: np.ndarray, mask: np.ndarray | None, display_name: str, labels: dict, scales, angles,
          ranges=(None, None)) -> str:
    digest = hashlib.sha256()
    facts = (image.shape, image.dtype.str, display_name, sorted(labels.items()), scales, angles)
    digest.update(repr(facts + (ranges if ranges != (None, None) else ())).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    if mask is not None:
        digest.update(np.ascontiguousarray(mask).tobytes())
    return digest.hexdigest()[:20]


class Bank:
    """Templates by id, in creation order, persisted in ``store``.

    Parameters
    ----------
    store : TemplateStore
    max_templates : int
        Bank size limit (RESOURCE_EXHAUSTED beyond it).
    max_template_pixels : int, optional
        Largest scale/rotation variant a template may have, in pixels.
    """

    def __init__(self, store: TemplateStore, *, max_templates: int, max_template_pixels: int | None = None) -> None:
        self._store = store
        self._max_templates = max_templates
        self._max_template_pixels = max_template_pixels
        # Guards the in-memory state only: never held across a store call, so reads and matches of
        # loaded templates never wait for a slow store. Writes to one id are serialised by the
        # id's own lock; _writing holds the ids whose write is in flight (counted against
        # max_templates).
        self._lock = threading.Lock()
        self._id_locks = [threading.Lock() for _ in range(_WRITE_STRIPES)]
        self._writing: set[str] = set()
        version, ids = store.snapshot()
        self._templates: dict[str, StoredTemplate] = {t.id: t for t in _calibrated(store.fetch(list(ids)))}
        # Changes apply by version, never newer state replaced by older: the
        # last snapshot applied, and this replica's own writes since then
        # (version, id, template or None for a delete), replayed over any
        # snapshot older than them.
        self._applied = version
        self._own: list[tuple[Version, str, StoredTemplate | None]] = []
        self.on_change: list[Callable[[], None]] = []  # called after another replica changed the bank
        store.watch(self.refresh)  # a shared store: follow the other replicas

    def refresh(self) -> None:
        """Bring the bank in line with a shared store that others change too.

        A snapshot older than the last one applied is dropped; this replica's
        own acknowledged writes newer than the snapshot stay (read-your-writes).
        """
        version, ids = self._store.snapshot()
        with self._lock:
            if self._applied.covers(version):
                return
            known = {tid: t for tid, t in self._templates.items() if ids.get(tid) == t.seq}
        fetched = {t.id: t for t in _calibrated(self._store.fetch([tid for tid in ids if tid not in known]))}
        with self._lock:
            if self._applied.covers(version):  # another refresh got further meanwhile
                return
            templates = {tid: known.get(tid) or fetched[tid] for tid in ids if tid in known or tid in fetched}
            # Own writes the snapshot does not hold yet stay; those of an
            # epoch the store has left were lost with it.
            self._own = [w for w in self._own if w[0].epoch == version.epoch and w[0].number > version.number]
            for _, tid, template in self._own:
                if template is None:
                    templates.pop(tid, None)
                else:
                    templates[tid] = template
            self._templates = templates
            self._applied = version
        for callback in self.on_change:
            callback()

    def __len__(self) -> int:
        return len(self._templates)

    def create(
        self,
        image: np.ndarray,
        mask: np.ndarray | None,
        *,
        template_id: str = "",
        display_name: str = "",
        labels: dict[str, str] | None = None,
        scales=(),
        angles=(),
        angle_range: tuple[float, float] | None = None,
        scale_range: tuple[float, float] | None = None,
        request_id: str = "",
    ) -> StoredTemplate:
        """Validate and store a template (HxWxC image, optional HxW mask, optional scales and angles,
        or pose ranges).

        With ``request_id`` (AIP-155) the create is idempotent: a retry with the same request id and
        content returns what the first try stored, wherever it got to (also when the first try's
        answer was lost after the store took it). A generated id is derived from the request id.
        """
        labels = dict(labels or {})
        template_id = _new_id(template_id, request_id)
        _check_metadata(display_name, labels)
        # The engine's checks (dtype, channels, NaN, the mask's size and
        # type), once, at creation; the variants are made when first matched.
        check_template(image, mask)
        if mask is not None:
            mask = mask.reshape(mask.shape[:2])
        angle_range, scale_range = check_pose(angle_range, scale_range, scales, angles, image.shape,
                                              self._max_template_pixels)
        scales, angles = check_steps(scales, angles, image.shape, self._max_template_pixels)
        template = StoredTemplate(
            id=template_id,
            image=image,
            mask=mask,
            display_name=display_name,
            labels=labels,
            create_time=time.time(),
            etag=_etag(image, mask, display_name, labels, scales, angles, (angle_range, scale_range)),
            scales=scales,
            angles=angles,
            angle_range=angle_range,
            scale_range=scale_range,
            # Calibrated here, once (tens of milliseconds): the frames' path only compares with it.
            texture_threshold=calibrated_threshold(image, "ccoeff_normed", mask) or 0.0,
        )
        return self._add(template, request_id)

    def _add(self, template: StoredTemplate, request_id: str) -> StoredTemplate:
        """Store a checked template, or answer a retry of the create that stored it (see :meth:`create`)."""
        template_id = template.id
        with self._writes_to(template_id):
            with self._lock:
                existing = self._templates.get(template_id)
                if existing is None and len(self._templates) + len(self._writing) >= self._max_templates:
                    raise LimitExceeded(f"the bank holds {len(self._templates)} templates, the limit (max_templates)")
                self._writing.add(template_id)
            try:
                if existing is not None:
                    return self._same_or_exists(existing, template, request_id)
                try:
                    stored, version = self._store.add(template)
                except KeyError:  # another replica has it, or an earlier try of this very create stored it
                    return self._same_or_exists(self._stored(template_id), template, request_id)
                except Unavailable:
                    # The outcome is unknown (a store that timed out may have written it): ask the
                    # store, and answer with what it holds when it is this create's.
                    found = self._stored(template_id, unknown_ok=True)
                    if found is None or found.etag != template.etag:
                        raise
                    return self._remember(found, None)
                return self._remember(stored, version)
            finally:
                with self._lock:
                    self._writing.discard(template_id)

    def _writes_to(self, template_id: str) -> threading.Lock:
        """The lock that serialises writes to one id: one of a fixed set, by the id's hash (a lock per
        id ever written would grow without end)."""
        digest = hashlib.blake2b(template_id.encode(), digest_size=4).digest()
        return self._id_locks[int.from_bytes(digest, "little") % _WRITE_STRIPES]

    def _stored(self, template_id: str, unknown_ok: bool = False) -> StoredTemplate | None:
        try:
            found = self._store.fetch([template_id])
        except Unavailable:
            if unknown_ok:
                return None
            raise
        return found[0] if found else None

    @staticmethod
    def _same_or_exists(existing: StoredTemplate | None, template: StoredTemplate, request_id: str) -> StoredTemplate:
        """A retried create (a request id, the same id and content) is answered with the stored template;
        anything else under an existing id is a conflict."""
        if request_id and existing is not None and existing.etag == template.etag:
            return existing
        raise AlreadyExists(f"template {name_of(template.id)} already exists: pick another id or delete it"
                            + ("" if request_id else " (a retry? send a request_id to make creates idempotent)"))

    def _remember(self, stored: StoredTemplate, version: Version | None) -> StoredTemplate:
        with self._lock:
            # A refresh that applied a snapshot at or after this write (while the store call ran,
            # no lock held) already holds what became of it: a later delete stays deleted.
            if version is None or not self._applied.covers(version):
                self._templates[stored.id] = stored
                if version is not None:
                    self._own.append((version, stored.id, stored))
        return stored

    def get(self, name: str) -> StoredTemplate:
        tid = template_id_of(name)
        template = self._templates.get(tid)
        if template is None:
            raise NotFound(f"template {name_of(tid)} does not exist")
        return template

    def delete(self, name: str) -> None:
        tid = template_id_of(name)
        with self._writes_to(tid):
            # The store decides: another replica may have created it a moment ago. (No bank lock
            # held meanwhile: matches of loaded templates go on.)
            version = self._store.delete(tid)
            if version is None:
                raise NotFound(f"template {name_of(tid)} does not exist")
            with self._lock:
                self._templates.pop(tid, None)
                if not self._applied.covers(version):
                    self._own.append((version, tid, None))

    def page(self, after: int, size: int) -> tuple[list[StoredTemplate], int | None]:
        """Up to ``size`` templates created after sequence ``after``, and the last one's sequence if more follow."""
        with self._lock:
            ordered = [t for t in self._templates.values() if t.seq > after]
        ordered.sort(key=lambda t: t.seq)
        page = ordered[:size]
        return page, (page[-1].seq if len(ordered) > size else None)

    def resolve(self, names: Sequence[str]) -> list[StoredTemplate]:
        """A snapshot of the named templates (all of them if ``names`` is empty)."""
        if not names:
            with self._lock:
                templates = sorted(self._templates.values(), key=lambda t: t.seq)
            if not templates:
                raise FailedPrecondition("the bank has no templates: create one first")
            return templates
        return [self.get(name) for name in names]


def _calibrated(templates: Iterable[StoredTemplate]) -> list[StoredTemplate]:
    """``templates``, those stored before templates carried their texture threshold (0.0) calibrated
    now, in memory: the default decision holds for a bank written by an older server too. The
    row is not written back (a derived figure, the same on every start of one installation; an
    older replica sharing the store reads the row as it wrote it). Each costs 25-120 ms, once per
    start; one that cannot be calibrated (a mask today's checks refuse, say) keeps 0.0 (the
    caller's threshold as given) and is logged, not a reason to stop the server."""
    templates = list(templates)
    old = [i for i, t in enumerate(templates) if t.texture_threshold == 0.0]
    if old:
        log.info("calibrating the texture thresholds of %d template(s) stored before templates carried one", len(old))
    for i in old:
        template = templates[i]
        try:
            threshold = calibrated_threshold(template.image, "ccoeff_normed", template.mask) or 0.0
        except Exception as error:  # noqa: BLE001 - whatever one old row holds, the bank opens
            log.warning("template %s keeps no texture threshold (the caller's threshold applies): %s", template.id, error)
            continue
        templates[i] = replace(template, texture_threshold=threshold)
    return templates


def _new_id(template_id: str, request_id: str) -> str:
    """The id a create stores under: the one asked for (checked), else one derived from the request id
    (so that a retry lands on the same id), else a fresh one."""
    if len(request_id) > 128:
        raise InvalidArgument("request_id is longer than 128 characters")
    if template_id:
        return template_id_of(template_id)
    if request_id:
        return "t" + hashlib.sha256(request_id.encode()).hexdigest()[:16]
    return "t" + uuid.uuid4().hex[:16]


def _check_metadata(display_name: str, labels: dict[str, str]) -> None:
    """Refuse a display name or labels over their limits."""
    if len(display_name) > 256:
        raise InvalidArgument("display_name is longer than 256 characters")
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(f"{len(labels)} labels: a template may have at most {MAX_LABELS}")
    for key, value in labels.items():
        if not key or len(key) > 63 or len(value) > 256:
            raise InvalidArgument(f"label {shown(key)}: keys must have 1-63 characters, values at most 256")

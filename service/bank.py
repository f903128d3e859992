"""The template bank: validated templates in memory, persisted by the store,
and the engine's prepared matchers for them.

Every change goes to the store first and to memory after, so what a client
was told exists does exist on disk. Matchers are prepared once per set of
templates and settings and kept (bounded), so matching an unchanged bank
never prepares anything again.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from .engine import Matcher
from .errors import AlreadyExists, FailedPrecondition, InvalidArgument, LimitExceeded, NotFound
from .store import Store, StoredTemplate
from .variants import Variant, check_steps, make_variant, variants_of

_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_PREFIX = "templates/"
MATCHERS_KEPT = 64


def template_id_of(name: str) -> str:
    """The id in ``templates/{id}`` (or a bare id)."""
    tid = name[len(_PREFIX):] if name.startswith(_PREFIX) else name
    if not _ID.match(tid):
        raise InvalidArgument(
            f"{name!r} is not a template name: use templates/{{id}} with an id of 1-63 characters of a-z, "
            "0-9 and '-', starting with a letter"
        )
    return tid


def name_of(template_id: str) -> str:
    return _PREFIX + template_id


def _etag(image: np.ndarray, mask: np.ndarray | None, display_name: str, labels: dict, scales, angles) -> str:
    digest = hashlib.sha256()
    digest.update(repr((image.shape, image.dtype.str, display_name, sorted(labels.items()), scales, angles)).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    if mask is not None:
        digest.update(np.ascontiguousarray(mask).tobytes())
    return digest.hexdigest()[:20]


class Bank:
    """Templates by id, in creation order, persisted in ``store``.

    Parameters
    ----------
    store : Store
    max_templates : int
        Bank size limit (RESOURCE_EXHAUSTED beyond it).
    """

    def __init__(self, store: Store, *, max_templates: int) -> None:
        self._store = store
        self._max_templates = max_templates
        self._lock = threading.Lock()
        self._templates: dict[str, StoredTemplate] = {t.id: t for t in store.load()}
        self._matchers: OrderedDict[tuple, Matcher] = OrderedDict()
        self._variants: dict[tuple[str, str], list[Variant]] = {}
        self.on_change: list = []  # called after another replica changed the bank
        watch = getattr(store, "watch", None)
        if watch is not None:  # a shared store: follow the other replicas
            watch(self.refresh)

    def refresh(self) -> None:
        """Bring the bank in line with a shared store that others change too."""
        ids = self._store.ids()
        with self._lock:
            known = {tid: t for tid, t in self._templates.items() if ids.get(tid) == t.seq}
        fetched = {t.id: t for t in self._store.fetch([tid for tid in ids if tid not in known])}
        with self._lock:
            self._templates = {tid: known.get(tid) or fetched[tid] for tid in ids if tid in known or tid in fetched}
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
    ) -> StoredTemplate:
        """Validate and store a template (HxWxC image, optional HxW mask, optional scales and angles)."""
        labels = dict(labels or {})
        if template_id:
            template_id = template_id_of(template_id)
        else:
            template_id = "t" + uuid.uuid4().hex[:16]
        if len(display_name) > 256:
            raise InvalidArgument("display_name is longer than 256 characters")
        for key, value in labels.items():
            if not key or len(key) > 63 or len(value) > 256:
                raise InvalidArgument(f"label {key!r}: keys must have 1-63 characters, values at most 256")
        if mask is not None:
            if mask.ndim == 3 and mask.shape[2] != 1:
                raise InvalidArgument(f"mask has {mask.shape[2]} channels: send a one-channel mask")
            mask = mask.reshape(mask.shape[:2])
            if mask.shape != image.shape[:2]:
                raise InvalidArgument(
                    f"mask is {mask.shape[0]}x{mask.shape[1]} but the image is {image.shape[0]}x{image.shape[1]}"
                )
        scales, angles = check_steps(scales, angles)
        # The engine's own checks (dtype, NaN, mask type), once, at creation,
        # on every variant.
        for scale in scales:
            for angle in angles:
                variant, variant_mask = make_variant(image, mask, scale, angle)
                Matcher([variant], masks=[variant_mask])
        template = StoredTemplate(
            id=template_id,
            image=image,
            mask=mask,
            display_name=display_name,
            labels=labels,
            create_time=time.time(),
            etag=_etag(image, mask, display_name, labels, scales, angles),
            scales=scales,
            angles=angles,
        )
        with self._lock:
            if template_id in self._templates:
                raise AlreadyExists(f"template {name_of(template_id)} already exists: pick another id or delete it")
            if len(self._templates) >= self._max_templates:
                raise LimitExceeded(f"the bank holds {len(self._templates)} templates, the limit (max_templates)")
            try:
                stored = self._store.add(template)
            except KeyError:
                raise AlreadyExists(f"template {name_of(template_id)} already exists") from None
            self._templates[template_id] = stored
        return stored

    def get(self, name: str) -> StoredTemplate:
        tid = template_id_of(name)
        template = self._templates.get(tid)
        if template is None:
            raise NotFound(f"template {name_of(tid)} does not exist")
        return template

    def delete(self, name: str) -> None:
        tid = template_id_of(name)
        with self._lock:
            if tid not in self._templates:
                raise NotFound(f"template {name_of(tid)} does not exist")
            self._store.delete(tid)
            del self._templates[tid]

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

    def variants(self, template: StoredTemplate) -> list[Variant]:
        """The template's scale/rotation variants, made once per template version."""
        key = (template.id, template.etag)
        found = self._variants.get(key)
        if found is None:
            found = variants_of(template)
            with self._lock:
                if len(self._variants) > 4 * max(len(self._templates), 16):
                    self._variants.clear()  # versions long gone pile up otherwise
                self._variants[key] = found
        return found

    def matcher(self, templates: Sequence, **settings) -> Matcher:
        """The engine's prepared Matcher for these templates (or variants) and settings (cached)."""
        key = (tuple((t.id, t.etag) for t in templates), tuple(sorted(settings.items())))
        with self._lock:
            matcher = self._matchers.get(key)
            if matcher is not None:
                self._matchers.move_to_end(key)
                return matcher
        # Prepared outside the lock: other streams keep going meanwhile.
        matcher = Matcher([t.image for t in templates], masks=[t.mask for t in templates], **settings)
        with self._lock:
            self._matchers[key] = matcher
            if len(self._matchers) > MATCHERS_KEPT:
                self._matchers.popitem(last=False)
        return matcher

"""What the engine prepares from templates alone, made once and kept.

A template's scale/rotation variants are made once per template version
(id and etag); an engine :class:`Matcher` is prepared once per set of
variants and match options. Both are bounded (by count, and the Matchers'
kernel spectra by bytes, a share of the memory budget), so a bank that
changes, or clients that cycle through settings, cannot grow the server's
memory without end. Matching an unchanged bank with unchanged settings
prepares nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from .engine import POSE_METHODS, Matcher, OptionError, PoseSearch
from .errors import InvalidArgument
from .templates import StoredTemplate
from .variants import Variant, variants_of

MATCHERS_KEPT = 64
VARIANT_SETS_KEPT = 1024
POSE_SEARCHES_KEPT = 64


class PreparedCache:
    """Variants by template version and Matchers by (variants, options), least recently used out first."""

    def __init__(self, *, matchers: int = MATCHERS_KEPT, variant_sets: int = VARIANT_SETS_KEPT,
                 retained_bytes: int | None = None) -> None:
        self._lock = threading.Lock()
        self._matchers: OrderedDict[tuple, Matcher] = OrderedDict()
        self._variants: OrderedDict[tuple[str, str], list[Variant]] = OrderedDict()
        self._limits = matchers, variant_sets
        self._retained_limit = retained_bytes
        self._sizes: dict[tuple, int] = {}  # what each kept Matcher retained when last measured
        self._searches: OrderedDict[tuple, PoseSearch] = OrderedDict()

    def retained_bytes(self) -> int:
        """What the kept Matchers hold between calls (their plans' kernel spectra), as last measured."""
        with self._lock:
            return sum(self._sizes.get(key, 0) for key in self._matchers)

    def trim(self, matcher: Matcher) -> None:
        """After a call on ``matcher``: forget the least recently used Matchers until what they retain fits.

        Only a Matcher that was just called can have grown (a plan for a new
        frame shape), so only its size is measured again.
        """
        if self._retained_limit is None:
            return
        size = matcher.retained_bytes()
        with self._lock:
            key = next((k for k, m in reversed(self._matchers.items()) if m is matcher), None)
            if key is None or self._sizes.get(key) == size:
                return
            self._sizes[key] = size
            total = sum(self._sizes.get(k, 0) for k in self._matchers)
            for old in list(self._matchers)[:-1]:  # never the most recent: a call may be using it
                if total <= self._retained_limit:
                    break
                total -= self._sizes.pop(old, 0)
                del self._matchers[old]

    def variants(self, template: StoredTemplate) -> list[Variant]:
        """The template's scale/rotation variants, made once per template version."""
        key = (template.id, template.etag)
        with self._lock:
            found = self._variants.get(key)
            if found is not None:
                self._variants.move_to_end(key)
                return found
        found = variants_of(template)  # outside the lock: other streams keep going meanwhile
        with self._lock:
            self._variants[key] = found
            if len(self._variants) > self._limits[1]:
                self._variants.popitem(last=False)
        return found

    def pose_search(self, template: StoredTemplate, method: str) -> PoseSearch:
        """The engine's PoseSearch for a template with pose ranges, prepared once per template version and method.

        Raises
        ------
        InvalidArgument
            A method pose search does not take.
        """
        if method not in POSE_METHODS:
            raise InvalidArgument(f"template {template.id} is found by pose search (it has an angle or scale range), "
                                  f"which takes the methods {', '.join(POSE_METHODS)}, not {method}")
        key = (template.id, template.etag, method)
        with self._lock:
            search = self._searches.get(key)
            if search is not None:
                self._searches.move_to_end(key)
                return search
        try:
            search = PoseSearch(template.image, mask=template.mask, angles=template.angle_range or (0.0, 0.0),
                                scales=template.scale_range or (1.0, 1.0), method=method)
        except OptionError as error:
            raise InvalidArgument(f"template {template.id}: {error}") from None
        with self._lock:
            self._searches[key] = search
            if len(self._searches) > POSE_SEARCHES_KEPT:
                self._searches.popitem(last=False)
        return search

    def matcher(self, variants: Sequence[Variant], **options: Any) -> Matcher:
        """The engine's prepared Matcher for these variants and options.

        Raises
        ------
        featuremap.service.engine.OptionError
            Options the engine refuses (checked by the engine, once, when the
            Matcher is prepared).
        """
        key = (tuple((v.id, v.etag) for v in variants), tuple(sorted(options.items())))
        with self._lock:
            matcher = self._matchers.get(key)
            if matcher is not None:
                self._matchers.move_to_end(key)
                return matcher
        matcher = Matcher([v.image for v in variants], masks=[v.mask for v in variants], **options)
        with self._lock:
            self._matchers[key] = matcher
            if len(self._matchers) > self._limits[0]:
                old, _ = self._matchers.popitem(last=False)
                self._sizes.pop(old, None)
        return matcher

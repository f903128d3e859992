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
from collections.abc import Hashable, Sequence
from typing import Any

from ..engine import POSE_METHODS, Kept, Matcher, OptionError, PoseSearch
from ..errors import InvalidArgument
from .templates import StoredTemplate
from .variants import Variant, variants_of

MATCHERS_KEPT = 64
VARIANT_SETS_KEPT = 1024
POSE_SEARCHES_KEPT = 64


class PreparedCache:
    """Variants by template version, Matchers by (variants, options), PoseSearches by (template version,
    method), each kept least recently used out first (see engine.Kept)."""

    def __init__(self, *, matchers: int = MATCHERS_KEPT, variant_sets: int = VARIANT_SETS_KEPT,
                 retained_bytes: int | None = None, device: str = "cpu") -> None:
        self.device = device  # where the Matchers compute (engine Matcher's device)
        self._matchers: Kept[Matcher] = Kept(matchers)
        self._variants: Kept[list[Variant]] = Kept(variant_sets)
        self._searches: Kept[PoseSearch] = Kept(POSE_SEARCHES_KEPT)
        self._retained_limit = retained_bytes
        self._lock = threading.Lock()  # guards _sizes
        # What each kept Matcher and PoseSearch retained when last measured, by (kind, key).
        self._sizes: dict[tuple[str, Hashable], int] = {}

    @property
    def retained_limit(self) -> int:
        """Bytes the kept Matchers and PoseSearches may retain together (unbounded: a very large number)."""
        return self._retained_limit if self._retained_limit is not None else 1 << 62

    def retained_bytes(self) -> int:
        """What the kept Matchers and PoseSearches hold between calls (kernel spectra, work arrays,
        rotated variants), as last measured."""
        live = {("matcher", k) for k in self._matchers.keys()} | {("search", k) for k in self._searches.keys()}
        with self._lock:
            return sum(size for key, size in self._sizes.items() if key in live)

    def trim(self, used: Matcher | PoseSearch) -> None:
        """After a call on ``used``: forget the least recently used Matchers and PoseSearches until what
        they retain fits the limit.

        Only what was just called can have grown (a plan for a new frame
        shape, variants made while tracking), so only its size is measured
        again. Neither the one just used nor any most recent of its kind is
        dropped: a call may be using it.
        """
        if self._retained_limit is None:
            return
        kind, kept = ("search", self._searches) if isinstance(used, PoseSearch) else ("matcher", self._matchers)
        size = used.retained_bytes()
        found = kept.key_of(used)
        matchers, searches = self._matchers.keys(), self._searches.keys()
        with self._lock:
            if found is None or self._sizes.get((kind, found)) == size:
                return
            self._sizes[(kind, found)] = size
            # What the Kept maps let go of retains nothing here any more.
            live = [("matcher", k) for k in matchers] + [("search", k) for k in searches]
            self._sizes = {k: self._sizes[k] for k in live if k in self._sizes}
            total = sum(self._sizes.values())
            # Oldest first, Matchers and searches alike; never the newest of either.
            for old in [("matcher", k) for k in matchers[:-1]] + [("search", k) for k in searches[:-1]]:
                if total <= self._retained_limit:
                    break
                total -= self._sizes.pop(old, 0)
                (self._matchers if old[0] == "matcher" else self._searches).discard(old[1])

    def variants(self, template: StoredTemplate) -> list[Variant]:
        """The template's scale/rotation variants, made once per template version."""
        return self._variants.get((template.id, template.etag), lambda: variants_of(template))

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

        def make() -> PoseSearch:
            try:
                return PoseSearch(template.image, mask=template.mask, angles=template.angle_range or (0.0, 0.0),
                                  scales=template.scale_range or (1.0, 1.0), method=method)
            except OptionError as error:
                raise InvalidArgument(f"template {template.id}: {error}") from None

        return self._searches.get((template.id, template.etag, method), make)

    def matcher(self, variants: Sequence[Variant], **options: Any) -> Matcher:
        """The engine's prepared Matcher for these variants and options.

        Raises
        ------
        featuremap.service.engine.OptionError
            Options the engine refuses (checked by the engine, once, when the
            Matcher is prepared).
        """
        key = (tuple((v.id, v.etag) for v in variants), tuple(sorted(options.items())))
        return self._matchers.get(key, lambda: Matcher([v.image for v in variants], masks=[v.mask for v in variants],
                                                       device=self.device, **options))

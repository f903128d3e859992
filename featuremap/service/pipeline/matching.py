"""One frame matched against a snapshot of templates: peaks in frame pixels and the maps to send.

Plain data in, plain data out: the options are engine names, the peaks are
dataclasses; the wire is the frame processor's business.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from featuremap import boxes
from featuremap.boxes import resized_size
from featuremap.wire import Peak

from ..engine import LOWER_IS_BETTER, Cancelled, Found, Matcher, Pose, check_search, map_origin
from ..engine import Peak as MapPeak
from ..engine.lighting import lit_alike_window
from ..engine.texture import for_frame, is_plain, plain_threshold
from ..errors import InvalidArgument
from ..store.bank import name_of
from ..store.prepared import PreparedCache
from ..store.templates import StoredTemplate
from ..store.variants import Variant, make_variant
from .batching import GpuBatcher
from .budget import MemoryBudget
from .plans import Computed, MatchOptions, Plan, PoseMemory, TemplateMap


#: A chunk of templates may hold maps of this many bytes at least (see _chunks).
CHUNK_MIN_BYTES = 64 << 20
#: Peaks asked of the engine beyond top_k for a plain template, for its lighting test to choose
#: from: look-alikes lit otherwise (a shadow, a brighter sky) may outscore its match, each at least
#: the peaks' minimum distance from the others.
PLAIN_SPARE = 8


def _merge(candidates: list[tuple], lower: bool, top_k: int, distance: int) -> list[tuple]:
    """Non-maximum suppression across a template's variants, by box centre, in frame pixels."""
    def same(a: tuple, b: tuple) -> bool:  # centres within ``distance`` (the peaks' own rule, on one map)
        return max(abs(a[1] + a[3] / 2 - b[1] - b[3] / 2), abs(a[2] + a[4] / 2 - b[2] - b[4] / 2)) < distance

    return boxes.suppress(candidates, lambda c: c[0], same, limit=top_k, lower_is_better=lower)


def _chunks(groups: list[tuple[StoredTemplate, list[Variant]]], frame: np.ndarray,
            stride: int) -> list[list[tuple[StoredTemplate, list[Variant]]]]:
    """Templates in runs whose maps take about as much memory as the frame (at least 64 MiB).

    When only peaks are wanted, each run's maps are reduced to peaks and
    dropped before the next run: memory is O(frame + chunk), not O(K x frame).
    """
    height, width = frame.shape[:2]
    map_bytes = ((height - 1) // stride + 1) * ((width - 1) // stride + 1) * 4
    limit = max(CHUNK_MIN_BYTES, 2 * frame.shape[2] * height * width * 4)
    chunks: list[list[tuple[StoredTemplate, list[Variant]]]] = [[]]
    used = 0
    for group in groups:
        cost = len(group[1]) * map_bytes
        if chunks[-1] and used + cost > limit:
            chunks.append([])
            used = 0
        chunks[-1].append(group)
        used += cost
    return chunks


def compute(plan: Plan, prepared: PreparedCache, frame: np.ndarray, *, budget: MemoryBudget,
            cancelled: Callable[[], bool] = lambda: False, poses: PoseMemory | None = None,
            gpu: GpuBatcher | None = None, wait: float | None = None) -> Computed:
    """Match one decoded frame (HxWxC) with a plan, within the memory budget.

    Each template is matched in its own layout: a gray frame against BGR
    templates is converted to BGR for them, a BGR or BGRA frame to gray for
    gray ones (see :func:`as_layout`), so no template of a plan is skipped.

    Templates with scales or angles are matched through every variant; their
    peaks are reported per template (the best variants, suppressed across
    variants, with their scale and angle), their map is the unscaled,
    unrotated variant's when there is one, else the best variant's. Without
    maps to send, templates are matched in chunks (see :func:`_chunks`).
    Templates with pose ranges are found by the engine's PoseSearch (near
    their last poses in ``poses`` first, when given); their map, when maps
    are asked for, is the template's drawn at the best pose's angle and
    scale, or the unrotated, unscaled template's when no pose was found (see
    :func:`_pose_map`). Each map says at which angle and scale it was drawn,
    and its window's size. With ``gpu`` (the prepared Matchers are on the
    GPU) each chunk goes to the batcher, waiting at most ``wait`` seconds for
    other frames to share its batch.

    Raises
    ------
    featuremap.service.engine.OptionError
        What the engine refuses (the frame, or the options with these templates).
    featuremap.service.engine.Cancelled
        ``cancelled()`` said so, between chunks or groups of templates.
    LimitExceeded
        A chunk needs more than the whole memory budget.
    """
    started = time.perf_counter()
    templates = plan.templates
    peaks: list[Peak] = []
    chosen: list[TemplateMap] = []
    # Each template against the frame in its own layout (gray, BGR): a frame of another layout is
    # converted to the template's, once per layout, not the template skipped.
    layouts = sorted({t.image.shape[2] for t in templates}, key=lambda c: c != frame.shape[2])
    for channels in layouts:
        same = tuple(t for t in templates if t.image.shape[2] == channels)
        layout_peaks, layout_maps = _compute_layout(plan, same, prepared, as_layout(frame, channels), budget=budget,
                                                    cancelled=cancelled, poses=poses, gpu=gpu, wait=wait)
        peaks += layout_peaks
        chosen += layout_maps
    if len(templates) > 1:  # in the plan's template order (layouts, plain templates and poses run apart)
        order = {name_of(t.id): i for i, t in enumerate(templates)}
        peaks.sort(key=lambda p: order[p.template])
        chosen.sort(key=lambda m: order[m.template])
    return Computed(peaks=peaks, maps=chosen, compute_ms=(time.perf_counter() - started) * 1e3)


def as_layout(frame: np.ndarray, channels: int) -> np.ndarray:
    """``frame`` (HxWxC) in a template's layout of ``channels``: gray <-> BGR, BGRA's alpha dropped.

    Raises InvalidArgument for a layout no conversion reaches (2 channels, say).
    """
    have = frame.shape[2]
    if have == channels:
        return frame
    if have not in (1, 3, 4) or channels not in (1, 3, 4):
        raise InvalidArgument(f"a frame of {have} channel(s) cannot be matched with templates of {channels}: "
                              "send gray (1), BGR (3) or BGRA (4) frames and templates")
    # Through BGR: a BGRA frame's alpha dropped, a gray one's value copied to each colour.
    colour = np.ascontiguousarray(frame[:, :, :3]) if have == 4 else frame if have == 3 else \
        cv2.cvtColor(np.ascontiguousarray(frame[:, :, 0]), cv2.COLOR_GRAY2BGR)
    if channels == 1:
        return cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)[:, :, None]
    if channels == 3:
        return colour
    return cv2.cvtColor(colour, cv2.COLOR_BGR2BGRA)  # a BGRA template stored before alpha became its mask


def _compute_layout(plan: Plan, templates: tuple[StoredTemplate, ...], prepared: PreparedCache, frame: np.ndarray,
                    *, budget: MemoryBudget, cancelled: Callable[[], bool], poses: PoseMemory | None,
                    gpu: GpuBatcher | None, wait: float | None) -> tuple[list[Peak], list[TemplateMap]]:
    """:func:`compute` for templates of the frame's layout: their peaks and chosen maps."""
    options = plan.options
    keep_maps = options.maps is not None
    posed = [t for t in templates if t.posed]
    searches = [prepared.pose_search(t, options.method) for t in posed]  # refuses other methods first
    if keep_maps and options.padding == "valid":  # a pose template's map that cannot be made, refused up front
        _check_fits([prepared.variants(t)[0] for t in posed], frame.shape[:2])
    # Pose templates' maps are made after their search (the pose says which variant): not in a chunk.
    groups: list[tuple[StoredTemplate, list[Variant]]] = [(t, prepared.variants(t)) for t in templates
                                                          if not t.posed]
    chunks = [groups] if keep_maps else _chunks(groups, frame, options.stride)
    lower = options.method in LOWER_IS_BETTER
    peaks: list[Peak] = []
    chosen: list[TemplateMap] = []
    # Plain templates run apart from the others: their lighting test comes after the engine's top_k,
    # so the engine is asked for spare peaks of theirs (look-alikes lit otherwise that score higher
    # must not crowd out the match), and of theirs alone (the others' peaks and costs stay as they are).
    runs: list[tuple[list[tuple[StoredTemplate, list[Variant]]], bool]] = []
    for chunk in chunks:
        apart: dict[bool, list[tuple[StoredTemplate, list[Variant]]]] = {False: [], True: []}
        for group in chunk:
            apart[_takes_plain_decision(group[0], options, frame)].append(group)
        runs += [(run, plain) for plain, run in apart.items() if run]
    windows = frame.shape[0] * frame.shape[1]
    for chunk, plain in runs:
        if cancelled():
            raise Cancelled("the call ended before its frame was matched")
        variants = [v for _, group in chunk for v in group]
        if options.padding == "valid":
            _check_fits(variants, frame.shape[:2])
        matcher = prepared.matcher(variants, **options.engine_options())
        top_k = options.top_k + PLAIN_SPARE if plain else options.top_k
        found = _run(matcher, frame, budget, cancelled, gpu, wait, top_k=top_k, threshold=options.threshold,
                     subpixel=options.subpixel, maps=keep_maps,
                     min_distance=[_peak_distance(v, options) for v in variants])
        if gpu is None:
            prepared.trim(matcher)
        first = 0
        for template, group in chunk:
            group_peaks = found.peaks[first:first + len(group)]
            group_maps = found.maps[first:first + len(group)] if keep_maps else None
            first += len(group)
            peaks_found, chosen_map = _template_peaks(template, group, group_peaks, group_maps, options, lower, top_k)
            # The top_k best a raised template's decision keeps are the best above the config's
            # threshold, less those it refuses (only similarities are raised: higher is better, and
            # every limit it sets is at or above the config's).
            if plain:
                peaks_found = _plain_decision(template, group, peaks_found, frame, options, windows)
            elif (raised := options.raised_threshold(template, windows)) != options.threshold:
                peaks_found = [p for p in peaks_found if p.score >= raised]
            peaks += peaks_found[:options.top_k]
            if chosen_map is not None:
                chosen.append(chosen_map)
        del found  # a run's maps go before the next run's come
    for template, search in zip(posed, searches):
        if cancelled():
            raise Cancelled("the call ended before its frame was matched")
        found_poses = _search_poses(template, search, frame, options, budget, cancelled, poses)
        prepared.trim(search)  # its variants count with the Matchers' spectra against the retained share
        peaks += _pose_peaks(template, found_poses, options)
        if keep_maps:
            chosen.append(_pose_map(template, found_poses, prepared, frame, options, budget=budget,
                                    cancelled=cancelled, gpu=gpu, wait=wait))
    return peaks, chosen


def _takes_plain_decision(template: StoredTemplate, options: MatchOptions, frame: np.ndarray) -> bool:
    """Whether ``template``'s peaks are decided by :func:`_plain_decision`: the default decision (the
    config asks for its texture threshold) on a plain template (``engine.texture.is_plain``), 8-bit
    template and frame (16-bit and float ones have no grey levels to hold a lighting to: they keep
    the raised threshold)."""
    return (options.texture_decides() and not template.posed and is_plain(template.texture_threshold, options.method)
            and frame.dtype == np.uint8 and template.image.dtype == np.uint8)


def _plain_decision(template: StoredTemplate, group: list[Variant], peaks: list[Peak], frame: np.ndarray,
                    options: MatchOptions, windows: int) -> list[Peak]:
    """A plain template's peaks that count: its window is lit as the template is
    (``engine.lighting.lit_alike``) and it reaches the template's plain threshold (made stricter for
    large frames alike); a window that no lighting of the envelope makes of the template does not
    count, however well shaped."""
    limit = max(options.threshold, for_frame(plain_threshold(template.texture_threshold), windows))
    return [p for p in peaks if p.score >= limit and _lit_alike(p, group, frame)]


def _lit_alike(peak: Peak, group: list[Variant], frame: np.ndarray) -> bool:
    """Whether the frame's window under ``peak`` is its variant lit alike (the part inside the frame,
    for a window its edge cuts)."""
    variant = next(v for v in group if (v.scale, v.angle) == (peak.scale, peak.angle))
    height, width = variant.image.shape[:2]
    top, left = round(peak.cy - (height - 1) / 2.0), round(peak.cx - (width - 1) / 2.0)
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(frame.shape[0], top + height), min(frame.shape[1], left + width)
    if y1 <= y0 or x1 <= x0:
        return False
    cut = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
    mask = None if variant.mask is None else variant.mask[cut]
    return lit_alike_window(variant.image[cut], mask, frame[y0:y1, x0:x1])


def _run(matcher: Matcher, frame: np.ndarray, budget: MemoryBudget, cancelled: Callable[[], bool],
         gpu: GpuBatcher | None, wait: float | None, **settings: Any) -> Found:
    """``matcher.find`` on one frame: in the GPU batcher's next batch (``gpu``: the Matcher is on the
    GPU), else on the CPU within the memory budget (what the call works in and what it keeps)."""
    if gpu is not None:
        return gpu.find(matcher, frame, wait=wait, cancelled=cancelled, **settings)
    working, retained = matcher.memory_estimate(frame.shape[:2])
    with budget.hold(working + retained, cancelled):
        return matcher.find([frame], cancelled=cancelled, **settings)[0]


def _check_fits(variants: list[Variant], frame_shape: tuple[int, int]) -> None:
    """Refuse a template (or one of its variants) larger than the frame under padding 'valid', by its
    name (the engine's own check can name only its index in the matcher)."""
    height, width = frame_shape
    for variant in variants:
        h, w = variant.image.shape[:2]
        if h > height or w > width:
            turned = "" if (variant.scale, variant.angle) == (1.0, 0.0) else \
                f" at scale {variant.scale:g} and angle {variant.angle:g}"
            raise InvalidArgument(
                f"template {name_of(variant.template_id)}{turned} ({h}x{w}) is larger than the frame "
                f"({height}x{width}) under padding='valid': use padding='same' or 'full', or a smaller template")


#: The least score of a pose when the config sets no threshold (a similarity).
POSE_MIN_SCORE = 0.5


def check_pose_options(options: MatchOptions) -> None:
    """The engine's own checks of the pose options a config sets (OptionError with the reason), when the
    config arrives rather than at its first frame with a pose template."""
    check_search(options.top_k, POSE_MIN_SCORE, **options.pose_options())


def _search_poses(template: StoredTemplate, search, frame: np.ndarray, options: MatchOptions, budget: MemoryBudget,
                  cancelled: Callable[[], bool], poses: PoseMemory | None) -> list[Pose]:
    """One pose template's poses in the frame, best first (tracked from ``poses`` when it has them)."""
    distance = options.method == "sqdiff_normed"  # the wire's score is the method's own: a distance
    threshold = options.raised_threshold(template, frame.shape[0] * frame.shape[1])
    if threshold is None:
        min_score = POSE_MIN_SCORE
    else:
        min_score = 1.0 - threshold if distance else threshold
    previous = poses.get(template) if poses is not None else None
    # The frame's pyramid and the top level's bank (a map per pose, its spectra): a grid of thousands
    # of poses holds gigabytes on a large frame, so the search is admitted by its estimate.
    settings = dict(top_k=options.top_k, min_score=min_score, cancelled=cancelled, **options.pose_options())
    with budget.hold(search.memory_estimate(frame.shape[:2]), cancelled):
        if previous:
            found = search.track(frame, previous, **settings)
        else:
            found = search.search(frame, **settings)
    if poses is not None:
        poses.put(template, found)
    return found


def _pose_peaks(template: StoredTemplate, found: list[Pose], options: MatchOptions) -> list[Peak]:
    """One pose template's peaks: its poses, as boxes before rotation."""
    distance = options.method == "sqdiff_normed"  # the wire's score is the method's own: a distance
    name = name_of(template.id)
    height, width = template.image.shape[:2]
    return [Peak.centred(name, pose.cx, pose.cy, width * pose.scale, height * pose.scale,
                              1.0 - pose.score if distance else pose.score, pose.scale, pose.angle,
                              visible=pose.visible, ambiguity=pose.ambiguity)
            for pose in found]


def _pose_map(template: StoredTemplate, found: list[Pose], prepared: PreparedCache, frame: np.ndarray,
              options: MatchOptions, *, budget: MemoryBudget, cancelled: Callable[[], bool], gpu: GpuBatcher | None,
              wait: float | None) -> TemplateMap:
    """A pose template's map: the template drawn at its best pose's angle and scale, matched over the frame,
    so that the heat at the pose is about the pose's own score; without a pose (or with one whose turned canvas
    is larger than a 'valid' frame), the unturned, unscaled template's.

    The turned variant is one frame's (its angle is sub-degree, new with every frame): its Matcher is
    made here, on the CPU beside the search, held in the memory budget for the call (working and
    kept bytes alike) and dropped after it, never in the prepared cache, whose Matchers are kept by
    their variants and would be crowded out by one-off ones. The unturned template's Matcher is the
    prepared cache's (one per template version and options), like any chunk's.
    """
    name = name_of(template.id)
    best = max(found, key=lambda pose: pose.score, default=None)  # a similarity for every pose method
    if best is not None and not (best.scale == 1.0 and best.angle % 360 == 0):
        image, mask = make_variant(template.image, template.mask, best.scale, best.angle)
        if options.padding != "valid" or (image.shape[0] <= frame.shape[0] and image.shape[1] <= frame.shape[1]):
            matcher = Matcher([image], masks=[mask], **options.engine_options())
            scores = _run(matcher, frame, budget, cancelled, None, None, maps=True).maps[0]
            return TemplateMap.placed(name, scores, options.padding, image, best.scale, best.angle)
    identity = prepared.variants(template)[0]  # ranges exclude scales and angles: its one variant
    matcher = prepared.matcher([identity], **options.engine_options())
    scores = _run(matcher, frame, budget, cancelled, gpu, wait, maps=True).maps[0]
    if gpu is None:
        prepared.trim(matcher)
    return TemplateMap.placed(name, scores, options.padding, identity.image)


def _peak_distance(variant: Variant, options: MatchOptions) -> int:
    """The least distance between two peaks of one variant's map: the config's, or half the template."""
    height, width = variant.image.shape[:2]
    return options.min_distance or max(1, min(height, width) // 2 // options.stride)


def _template_peaks(template: StoredTemplate, group: list[Variant], group_peaks: list[list[MapPeak]],
                    group_maps: list[np.ndarray] | None, options: MatchOptions, lower: bool,
                    top_k: int) -> tuple[list[Peak], TemplateMap | None]:
    """One template's best ``top_k`` peaks in frame pixels (merged across its variants) and the map to
    send for it (if any)."""
    candidates = []  # (score, x, y, width, height, index of the variant in the group)
    for index, (variant, found) in enumerate(zip(group, group_peaks, strict=True)):
        height, width = variant.image.shape[:2]
        ox, oy = map_origin(options.padding, height, width)
        candidates += [(p.score, ox + p.x * options.stride, oy + p.y * options.stride, width, height, index)
                       for p in found]
    if len(group) > 1:
        height, width = template.image.shape[:2]
        candidates = _merge(candidates, lower, top_k, max(1, min(height, width) // 2))
    name = name_of(template.id)
    # The box is the scaled template's before rotation, about the variant's centre (its canvas's).
    peaks = [Peak.centred(name, x + (w - 1) / 2.0, y + (h - 1) / 2.0,
                               *resized_size(*template.image.shape[:2], group[i].scale), score,
                               group[i].scale, group[i].angle)
             for score, x, y, w, h, i in candidates]
    if group_maps is None:
        return peaks, None
    pick = next((i for i, v in enumerate(group) if v.scale == 1.0 and v.angle % 360 == 0), None)
    if pick is None:
        pick = candidates[0][5] if candidates else 0
    variant = group[pick]
    return peaks, TemplateMap.placed(name, group_maps[pick], options.padding, variant.image, variant.scale,
                                     variant.angle)

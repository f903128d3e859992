"""A MatchConfig resolved against the bank, and one frame matched with it.

Kept apart from the servicer so that Match and StreamMatch share it and the
servicer stays thin: decode, call, encode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from featuremap.v1 import featuremap_pb2 as pb

from . import codec
from .bank import Bank, name_of
from .engine import LOWER_IS_BETTER, METHODS, find_peaks
from .errors import InvalidArgument, LimitExceeded
from .store import StoredTemplate

# The proto names each engine method METHOD_<NAME>.
_METHODS = {pb.METHOD_UNSPECIFIED: "ccoeff_normed",
            **{pb.Method.Value(f"METHOD_{name.upper()}"): name for name in METHODS}}
_PADDINGS = {pb.PADDING_UNSPECIFIED: "valid", pb.PADDING_VALID: "valid", pb.PADDING_SAME: "same",
             pb.PADDING_FULL: "full"}
_BORDERS = {pb.BORDER_UNSPECIFIED: "constant", pb.BORDER_CONSTANT: "constant", pb.BORDER_REFLECT: "reflect",
            pb.BORDER_REPLICATE: "replicate"}
_ENCODINGS = (pb.MAP_ENCODING_UNSPECIFIED, pb.MAP_ENCODING_FLOAT32, pb.MAP_ENCODING_FLOAT16,
              pb.MAP_ENCODING_UINT8)
MAX_TOP_K = 1000
MAX_STRIDE = 64


def _choice(table: dict, value: int, what: str) -> str:
    if value not in table:
        raise InvalidArgument(f"unknown {what} {value}: see the {what} enum in featuremap.proto")
    return table[value]


@dataclass(frozen=True)
class Resolved:
    """A config with its bank snapshot and validated options."""

    templates: tuple[StoredTemplate, ...]
    whole_bank: bool
    method: str
    padding: str
    border: str
    border_value: float
    stride: int
    top_k: int
    threshold: float | None
    min_distance: int
    subpixel: bool
    encoding: int
    realtime: bool
    data_range: float | None = None

    def engine_settings(self) -> dict:
        settings = dict(method=self.method, padding=self.padding, border=self.border,
                        border_value=self.border_value, stride=self.stride)
        if self.method == "ssim":
            settings["data_range"] = self.data_range
        return settings


def resolve(config: pb.MatchConfig, bank: Bank, *, max_templates_per_request: int) -> Resolved:
    """Validate a config and take the snapshot of the templates it names."""
    if len(config.templates) > max_templates_per_request:
        raise LimitExceeded(
            f"the config names {len(config.templates)} templates, over the limit of {max_templates_per_request} "
            "(max_templates_per_request)"
        )
    templates = tuple(bank.resolve(list(config.templates)))
    if not config.templates and len(templates) > max_templates_per_request:
        raise LimitExceeded(
            f"the whole bank is {len(templates)} templates, over the limit of {max_templates_per_request} "
            "(max_templates_per_request): name the templates"
        )
    stride = config.stride or 1
    if stride > MAX_STRIDE:
        raise InvalidArgument(f"stride {stride} is over {MAX_STRIDE}")
    top_k = config.peaks.top_k or 1
    if top_k > MAX_TOP_K:
        raise InvalidArgument(f"peaks.top_k {top_k} is over {MAX_TOP_K}")
    if config.maps.encoding not in _ENCODINGS:
        raise InvalidArgument(f"unknown map encoding {config.maps.encoding}")
    if not np.isfinite(config.border_value):
        raise InvalidArgument("border_value must be finite")
    if not np.isfinite(config.data_range) or config.data_range < 0:
        raise InvalidArgument("data_range must be a positive number, or 0 for the frame's default")
    threshold = config.peaks.threshold if config.peaks.HasField("threshold") else None
    if threshold is not None and not np.isfinite(threshold):
        raise InvalidArgument("peaks.threshold must be finite")
    return Resolved(
        templates=templates,
        whole_bank=not config.templates,
        method=_choice(_METHODS, config.method, "method"),
        padding=_choice(_PADDINGS, config.padding, "padding"),
        border=_choice(_BORDERS, config.border, "border"),
        border_value=float(config.border_value),
        stride=stride,
        top_k=top_k,
        threshold=threshold,
        min_distance=config.peaks.min_distance,
        subpixel=config.peaks.subpixel,
        encoding=config.maps.encoding,
        realtime=config.realtime,
        data_range=config.data_range or None,
    )


def _origin(padding: str, height: int, width: int) -> tuple[int, int]:
    """Frame position (x, y) of the top-left corner of map pixel (0, 0)'s window."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        return -(width // 2), -(height // 2)
    return -(width - 1), -(height - 1)


@dataclass
class Computed:
    """One frame's peaks and (encoded later) maps: (template name, map, origin x, origin y)."""

    peaks: list[pb.Peak]
    maps: list[tuple[str, np.ndarray, int, int]]
    compute_ms: float


def _merge(candidates: list[tuple], lower: bool, top_k: int, distance: int) -> list[tuple]:
    """Non-maximum suppression across a template's variants, by box centre, in frame pixels."""
    candidates.sort(key=lambda c: c[0] if lower else -c[0])
    kept = []
    for cand in candidates:
        cx, cy = cand[1] + cand[3] / 2, cand[2] + cand[4] / 2
        if all(max(abs(cx - k[1] - k[3] / 2), abs(cy - k[2] - k[4] / 2)) >= distance for k in kept):
            kept.append(cand)
            if len(kept) == top_k:
                break
    return kept


def compute(resolved: Resolved, bank: Bank, frame: np.ndarray) -> Computed:
    """Match one decoded frame (HxWxC) with a resolved config.

    Templates with scales or angles are matched through every variant; their
    peaks are reported per template (the best variants, suppressed across
    variants, with their scale and angle), their map is the unscaled,
    unrotated variant's when there is one, else the best variant's.
    """
    started = time.perf_counter()
    templates = resolved.templates
    if resolved.whole_bank:
        # The whole bank means its templates of the frame's channel count.
        templates = tuple(t for t in templates if t.image.shape[2] == frame.shape[2])
        if not templates:
            raise InvalidArgument(f"no template of the bank has the frame's {frame.shape[2]} channel(s)")
    groups = [(template, bank.variants(template)) for template in templates]
    variants = [v for _, group in groups for v in group]
    if resolved.method == "ssim" and any(v.mask is not None for v in variants):
        raise InvalidArgument("ssim takes no masks, and rotated variants need them: use another method")
    maps = bank.matcher(variants, **resolved.engine_settings())(frame)
    lower = resolved.method in LOWER_IS_BETTER
    peaks, chosen = [], []
    first = 0
    for template, group in groups:
        group_maps = maps[first:first + len(group)]
        first += len(group)
        candidates = []  # (score, x, y, width, height, index of the variant in the group)
        for index, (variant, score_map) in enumerate(zip(group, group_maps)):
            height, width = variant.image.shape[:2]
            ox, oy = _origin(resolved.padding, height, width)
            distance = resolved.min_distance or max(1, min(height, width) // 2 // resolved.stride)
            found = find_peaks(score_map, method=resolved.method, top_k=resolved.top_k,
                               threshold=resolved.threshold, min_distance=distance, subpixel=resolved.subpixel)
            candidates += [(p.score, ox + p.x * resolved.stride, oy + p.y * resolved.stride, width, height, index)
                           for p in found]
        if len(group) > 1:
            height, width = template.image.shape[:2]
            candidates = _merge(candidates, lower, resolved.top_k, max(1, min(height, width) // 2))
        name = name_of(template.id)
        peaks += [pb.Peak(template=name, x=x, y=y, width=w, height=h, score=score, scale=group[i].scale,
                          angle=group[i].angle) for score, x, y, w, h, i in candidates]
        pick = next((i for i, v in enumerate(group) if v.scale == 1.0 and v.angle % 360 == 0), None)
        if pick is None:
            pick = candidates[0][5] if candidates else 0
        chosen.append((name, group_maps[pick], *_origin(resolved.padding, *group[pick].image.shape[:2])))
    return Computed(peaks=peaks, maps=chosen, compute_ms=(time.perf_counter() - started) * 1e3)


def encode_maps(resolved: Resolved, computed: Computed) -> list:
    """The maps of a computed frame, in the config's encoding, as ``FrameResult.maps`` wire bytes.

    Empty when no maps were asked for. See :func:`codec.frame_response`.
    """
    if resolved.encoding == pb.MAP_ENCODING_UNSPECIFIED:
        return []
    wire = []
    for name, score_map, ox, oy in computed.maps:
        data, scale, offset = codec.encode_map(score_map, resolved.encoding)
        header = pb.FeatureMap(
            template=name, height=score_map.shape[0], width=score_map.shape[1],
            encoding=resolved.encoding, scale=scale, offset=offset, origin_x=ox, origin_y=oy,
            stride=resolved.stride,
        )
        wire += codec.feature_map_wire(header, data)
    return wire

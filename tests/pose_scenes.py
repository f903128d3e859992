"""Real-photograph scenes for the pose search, each with the pose every copy of its part was pasted at.

Every scene cuts a part from one of scikit-image's bundled photographs, pastes
copies of it (bilinear, rotated and scaled about the part's centre) onto a
background made of other real photographs, and then degrades the whole frame
the way a camera would: scene lighting (gain, gradient, vignetting), optics
(Gaussian or motion blur), sensor noise (shot plus read noise), 8-bit
quantisation and, for most scenes, a JPEG round trip.

The pasted poses are what the scenes were built from, not necessarily what
the best match in the finished frame is (blur, noise, occlusion and clipping
move the optimum a little); ``tests/benchmarks/pose_truth.py`` measures the
latter with an independent exhaustive OpenCV search and stores it in
``tests/data/pose_truth.json``.

Conventions (those of the pose search): ``angle`` in degrees, counter-clockwise
as displayed (``cv2.getRotationMatrix2D``), in [-180, 180); ``cx, cy`` the
part's centre in frame pixels, the centre of the top-left pixel being (0, 0)
and the part's own centre ((w - 1) / 2, (h - 1) / 2); ``scale`` multiplies the
part's size; ``visible`` the fraction of the part's rotated, scaled box (its
pixels' outer edges) that lies inside the frame.

Nothing here imports the code under test: only numpy, OpenCV and
``skimage.data``. Every scene is deterministic (fixed seeds).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

__all__ = ["Scene", "build", "names", "box_corners", "visible_fraction", "box_iou", "place"]


@dataclass
class Scene:
    """One test scene and the poses its part was pasted at.

    Attributes
    ----------
    name : str
        The scene's name (see :func:`names`).
    frame : numpy.ndarray
        uint8, HxW gray or HxWx3 BGR.
    template : numpy.ndarray
        uint8, the part as cut from its photograph, with the frame's channels.
    instances : list of dict
        One per pasted copy, in paste order (later copies cover earlier ones):
        ``cx, cy, angle, scale, visible``.
    angles : tuple of float
        ``(low, high)`` degrees to search; (-180, 180) for any rotation.
    scales : tuple of float
        ``(low, high)``; (1.0, 1.0) unless the scene has scale changes.
    clipped : set of int
        Indices of the instances cut by the frame's edge (``visible < 1``).
    blurred : bool
        Whether the scene has camera-like blur beyond the light blur every
        scene gets (the truth script allows 1 px there instead of 0.5 px).
    description : str
        What the scene holds, in a line.
    """

    name: str
    frame: np.ndarray
    template: np.ndarray
    instances: list[dict]
    angles: tuple[float, float] = (-180.0, 180.0)
    scales: tuple[float, float] = (1.0, 1.0)
    clipped: set[int] = field(default_factory=set)
    blurred: bool = False
    description: str = ""


# --------------------------------------------------------------------------- photographs


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    """A scikit-image photograph as uint8 gray or BGR (read-only; cached, loading costs ~10-100 ms)."""
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 3:
        image = cv2.cvtColor(image[:, :, :3], cv2.COLOR_RGB2BGR)
    image = np.ascontiguousarray(image)
    image.setflags(write=False)
    return image


def _gray(name: str) -> np.ndarray:
    image = _photo(name)
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _bgr(name: str) -> np.ndarray:
    image = _photo(name)
    return image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)


def _cover(image: np.ndarray, width: int, height: int, shift: tuple[float, float] = (0.5, 0.5)) -> np.ndarray:
    """``image`` resized (keeping its aspect) to cover width x height, then cropped there.

    ``shift`` picks which part of the oversize side is kept (0 = start, 1 = end)."""
    h, w = image.shape[:2]
    zoom = max(width / w, height / h)
    size = (max(width, math.ceil(w * zoom)), max(height, math.ceil(h * zoom)))
    # Area averaging when shrinking keeps real texture instead of aliasing it; cubic when enlarging.
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_CUBIC)
    y0 = int(round((size[1] - height) * shift[1]))
    x0 = int(round((size[0] - width) * shift[0]))
    return resized[y0:y0 + height, x0:x0 + width]


def _mosaic(photos: list[str], width: int, height: int, columns: int, rows: int, seed: int) -> np.ndarray:
    """A gray mosaic of real photographs (a stand-in for a busy 12 MP scene), each tile a resized photograph."""
    rng = np.random.default_rng(seed)
    frame = np.zeros((height, width), np.float32)
    xs = np.linspace(0, width, columns + 1).round().astype(int)
    ys = np.linspace(0, height, rows + 1).round().astype(int)
    order = [photos[i % len(photos)] for i in range(columns * rows)]
    for k, name in enumerate(order):
        r, c = divmod(k, columns)
        tile = _cover(_gray(name), xs[c + 1] - xs[c], ys[r + 1] - ys[r], tuple(rng.uniform(0.2, 0.8, 2)))
        # Tiles differ in exposure as separate shots would.
        frame[ys[r]:ys[r + 1], xs[c]:xs[c + 1]] = tile * rng.uniform(0.8, 1.1) + rng.uniform(-10, 10)
    return frame


# --------------------------------------------------------------------------- geometry


def _matrix(w: int, h: int, angle: float, scale: float, cx: float, cy: float) -> np.ndarray:
    """The 2x3 map from part pixels to frame pixels (the pose search's convention)."""
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    matrix[:, 2] += np.array([cx, cy]) - centre
    return matrix


def box_corners(w: int, h: int, angle: float, scale: float, cx: float, cy: float) -> np.ndarray:
    """The four corners (4x2 float32, in order round the box) of a w x h part's outer pixel edges at a pose."""
    matrix = _matrix(w, h, angle, scale, cx, cy)
    corners = np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [w - 0.5, h - 0.5, 1], [-0.5, h - 0.5, 1]])
    return (corners @ matrix.T).astype(np.float32)


def _area(polygon: np.ndarray) -> float:
    return float(abs(cv2.contourArea(polygon.astype(np.float32))))


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Area shared by two convex polygons."""
    area, _ = cv2.intersectConvexConvex(a.astype(np.float32), b.astype(np.float32))
    return max(float(area), 0.0)


def visible_fraction(corners: np.ndarray, width: int, height: int) -> float:
    """The fraction of a box's area inside a width x height frame (pixel edges: -0.5 .. width - 0.5)."""
    frame = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]],
                     np.float32)
    return min(1.0, _overlap(corners, frame) / _area(corners))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two convex boxes (corner arrays)."""
    inter = _overlap(a, b)
    return inter / (_area(a) + _area(b) - inter)


# --------------------------------------------------------------------------- drawing


def place(frame: np.ndarray, template: np.ndarray, angle: float, scale: float, cx: float, cy: float) -> None:
    """Draw ``template`` into float32 ``frame`` in place, at a pose (bilinear; the part covers what lies under it).

    The same sums as ``tests/scenes.py``'s ``place`` (warp the part and a
    plane of ones, blend by the warped ones), but warped only over the part's
    bounding box, which keeps 12 MP frames quick.
    """
    h, w = template.shape[:2]
    height, width = frame.shape[:2]
    corners = box_corners(w, h, angle, scale, cx, cy)
    x0 = max(int(math.floor(corners[:, 0].min())) - 2, 0)
    y0 = max(int(math.floor(corners[:, 1].min())) - 2, 0)
    x1 = min(int(math.ceil(corners[:, 0].max())) + 3, width)
    y1 = min(int(math.ceil(corners[:, 1].max())) + 3, height)
    if x1 <= x0 or y1 <= y0:
        return
    matrix = _matrix(w, h, angle, scale, cx - x0, cy - y0)
    size = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(template.astype(np.float32), matrix, size, flags=cv2.INTER_LINEAR)
    cover = cv2.warpAffine(np.ones((h, w), np.float32), matrix, size, flags=cv2.INTER_LINEAR)
    if warped.ndim == 3:
        cover = cover[:, :, None]
    roi = frame[y0:y1, x0:x1]
    roi *= 1.0 - cover
    roi += warped


def _instance(w: int, h: int, angle: float, scale: float, cx: float, cy: float, size: tuple[int, int]) -> dict:
    corners = box_corners(w, h, angle, scale, cx, cy)
    return {"cx": cx, "cy": cy, "angle": angle, "scale": scale,
            "visible": round(visible_fraction(corners, *size), 4)}


def _wrap(angle: float) -> float:
    return round((angle + 180.0) % 360.0 - 180.0, 2)


def _scatter(rng: np.random.Generator, count: int, size: tuple[int, int], part: tuple[int, int],
             angles=(-180.0, 180.0), scales=(1.0, 1.0), gap: float = 8.0, margin: float = 2.0,
             taken: list[tuple[float, float, float]] | None = None) -> list[tuple[float, float, float, float]]:
    """``count`` poses (angle, scale, cx, cy) wholly inside the frame, their circumscribed circles ``gap`` apart.

    Circles rather than boxes keep neighbours clearly apart whatever their
    angles, so a person can tell every copy from the next. ``taken`` holds
    circles (cx, cy, radius) already used (it is extended).
    """
    width, height = size
    w, h = part
    taken = taken if taken is not None else []
    poses: list[tuple[float, float, float, float]] = []
    for _ in range(200000):
        if len(poses) == count:
            return poses
        angle = _wrap(rng.uniform(*angles)) if angles[1] - angles[0] >= 360 else round(rng.uniform(*angles), 2)
        scale = round(math.exp(rng.uniform(math.log(scales[0]), math.log(scales[1]))), 4)
        corners = box_corners(w, h, angle, scale, 0.0, 0.0)
        hx, hy = np.abs(corners).max(axis=0)
        if width - 1 - 2 * (hx + margin) <= 0 or height - 1 - 2 * (hy + margin) <= 0:
            continue
        cx = round(rng.uniform(hx + margin - 0.5, width - 0.5 - hx - margin), 2)
        cy = round(rng.uniform(hy + margin - 0.5, height - 0.5 - hy - margin), 2)
        radius = 0.5 * math.hypot(w, h) * scale
        if all(math.hypot(cx - x, cy - y) >= radius + r + gap for x, y, r in taken):
            taken.append((cx, cy, radius))
            poses.append((angle, scale, cx, cy))
    raise RuntimeError(f"could not scatter {count} parts of {part} in {size}")


# --------------------------------------------------------------------------- the camera


def _lighting(frame: np.ndarray, gain: float = 1.0, gradient: tuple[float, float] = (0.0, 0.0),
              vignette: float = 0.0, offset: float = 0.0) -> np.ndarray:
    """Scene light: an overall gain, a linear ramp (relative change across the frame in x and y) and
    vignetting (relative fall-off at the corners), multiplied in; then an offset."""
    height, width = frame.shape[:2]
    x = (np.arange(width, dtype=np.float32) / max(width - 1, 1) - 0.5)[None, :]
    y = (np.arange(height, dtype=np.float32) / max(height - 1, 1) - 0.5)[:, None]
    field_ = gain * (1.0 + gradient[0] * x + gradient[1] * y) * (1.0 - vignette * 2.0 * (x * x + y * y))
    if frame.ndim == 3:
        field_ = field_[:, :, None]
    return frame * field_.astype(np.float32) + offset


def _motion_kernel(length: int, angle: float) -> np.ndarray:
    """A line kernel (camera shake), symmetric about its centre so that it blurs without shifting."""
    size = 2 * (length // 2 + 1) + 1  # odd, so the centre is a pixel
    kernel = np.zeros((size, size), np.float32)
    c = (size - 1) / 2.0
    dx, dy = math.cos(math.radians(angle)), -math.sin(math.radians(angle))
    for t in np.linspace(-(length - 1) / 2.0, (length - 1) / 2.0, 4 * length + 1):
        # Splat each sample bilinearly, so the kernel's centroid stays at its centre exactly.
        x, y = c + t * dx, c + t * dy
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        kernel[y0, x0] += (1 - fx) * (1 - fy)
        kernel[y0, x0 + 1] += fx * (1 - fy)
        kernel[y0 + 1, x0] += (1 - fx) * fy
        kernel[y0 + 1, x0 + 1] += fx * fy
    return kernel / kernel.sum()


def _camera(frame: np.ndarray, rng: np.random.Generator, sigma: float = 0.8, motion: tuple[int, float] | None = None,
            read_noise: float = 2.0, shot_noise: float = 0.04, jpeg: int | None = 92) -> np.ndarray:
    """The optics and the sensor: blur (Gaussian ``sigma`` after an optional motion kernel (length, angle)),
    noise of variance ``read_noise**2 + shot_noise * signal`` (photon shot noise grows with the light),
    8-bit quantisation, then an optional JPEG round trip at quality ``jpeg``."""
    if motion is not None:
        frame = cv2.filter2D(frame, -1, _motion_kernel(*motion), borderType=cv2.BORDER_REFLECT)
    if sigma > 0:
        frame = cv2.GaussianBlur(frame, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    signal = np.clip(frame, 0.0, 255.0)
    std = np.sqrt(read_noise * read_noise + shot_noise * signal)
    noisy = signal + rng.standard_normal(frame.shape, dtype=np.float32) * std
    out = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if jpeg is not None:
        ok, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg)])
        assert ok
        out = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    return out


def _paste_all(frame: np.ndarray, template: np.ndarray, poses, size) -> list[dict]:
    h, w = template.shape[:2]
    instances = []
    for angle, scale, cx, cy in poses:
        place(frame, template, angle, scale, cx, cy)
        instances.append(_instance(w, h, angle, scale, cx, cy, size))
    return instances


def _scene(name: str, frame: np.ndarray, template: np.ndarray, instances: list[dict], **kwargs) -> Scene:
    clipped = {i for i, inst in enumerate(instances) if inst["visible"] < 1.0}
    return Scene(name=name, frame=frame, template=np.ascontiguousarray(template), instances=instances,
                 clipped=clipped, **kwargs)


# --------------------------------------------------------------------------- the scenes


def _many_small() -> Scene:
    rng = np.random.default_rng(101)
    size = (1024, 768)
    # The spoon's bowl with its specular highlights: edges, texture, nothing symmetric (40x30).
    part = _gray("coffee")[236:266, 332:372].copy()
    frame = _cover(_gray("gravel"), *size).astype(np.float32)
    poses = _scatter(rng, 20, size, part.shape[::-1], gap=6.0)
    instances = _paste_all(frame, part, poses, size)
    frame = _lighting(frame, gain=1.05, gradient=(0.15, -0.1))
    return _scene("many_small", _camera(frame, rng, sigma=0.8, jpeg=92), part, instances,
                  description="20 copies of a 40x30 spoon crop (coffee) at any angle on gravel, 1024x768")


def _touching() -> Scene:
    rng = np.random.default_rng(202)
    size = (640, 480)
    # The rocket's nose cone: an object-like part (72x56), mirror- but not point-symmetric.
    part = _gray("rocket")[120:176, 290:362].copy()
    h, w = part.shape
    frame = _cover(_gray("brick"), *size).astype(np.float32)
    # A chain: each copy overlaps the one before it by a chosen box IoU (0 = just touching).
    # 0.004: the boxes just touch (a sliver of overlap, so that they meet despite rounding).
    targets = [0.004, 0.10, 0.20, 0.30]
    for _attempt in range(1000):
        first = (_wrap(rng.uniform(-180, 180)), 1.0, round(rng.uniform(130, 200), 2), round(rng.uniform(150, 330), 2))
        poses = [first]
        heading = rng.uniform(-40, 40)
        ok = True
        for target in targets:
            angle = _wrap(rng.uniform(-180, 180))
            heading += rng.uniform(-50, 50)
            dx, dy = math.cos(math.radians(heading)), math.sin(math.radians(heading))
            _, _, px, py = poses[-1]
            prev = box_corners(w, h, poses[-1][0], 1.0, px, py)

            def iou(d):
                return box_iou(prev, box_corners(w, h, angle, 1.0, px + d * dx, py + d * dy))

            # The overlap shrinks as the copy slides out along the heading: bisect for the target.
            lo, hi = 0.0, math.hypot(w, h) + 2
            if iou(lo) < target:
                ok = False
                break
            for _ in range(50):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if iou(mid) > target else (lo, mid)
            d = 0.5 * (lo + hi)
            cand = (angle, 1.0, round(px + d * dx, 2), round(py + d * dy, 2))
            corners = box_corners(w, h, *cand)
            if visible_fraction(corners, *size) < 1.0 or corners.min() < 4 or corners[:, 0].max() > size[0] - 5 \
                    or corners[:, 1].max() > size[1] - 5:
                ok = False
                break
            # Only neighbours in the chain overlap, and not beyond ~0.3.
            others = [box_corners(w, h, *p) for p in poses[:-1]]
            if any(_overlap(corners, o) > 0 for o in others):
                ok = False
                break
            poses.append(cand)
        if ok:
            break
    else:
        raise RuntimeError("no touching chain found")
    instances = _paste_all(frame, part, poses, size)
    frame = _lighting(frame, gain=0.95)
    return _scene("touching", _camera(frame, rng, sigma=0.9, jpeg=90), part, instances,
                  description="5 copies of a 72x56 rocket nose in a chain, touching then overlapping "
                              "(box IoU 0, 0.1, 0.2, 0.3; later copies on top) on brick, 640x480")


def _clipped() -> Scene:
    rng = np.random.default_rng(303)
    size = (1024, 768)
    width, height = size
    # The mission patch's rim and lettering (64x48).
    part = _gray("astronaut")[340:388, 116:180].copy()
    h, w = part.shape
    frame = _cover(_gray("grass"), *size).astype(np.float32)
    taken: list[tuple[float, float, float]] = []
    radius = 0.5 * math.hypot(w, h)
    # Clipped copies: (edge, fraction of the box kept). The corner one loses area to two edges.
    plan = [("left", 0.92), ("top", 0.85), ("right", 0.78), ("bottom", 0.88), ("top-right", 0.80),
            ("bottom", 0.95), ("left", 0.76)]
    poses = []
    for edge, keep in plan:
        for _ in range(1000):
            angle = _wrap(rng.uniform(-180, 180))
            along = rng.uniform(0.1, 0.9)
            if edge == "left":
                start, normal = (0.0, along * height), (1.0, 0.0)
            elif edge == "right":
                start, normal = (width - 1.0, along * height), (-1.0, 0.0)
            elif edge == "top":
                start, normal = (along * width, 0.0), (0.0, 1.0)
            elif edge == "bottom":
                start, normal = (along * width, height - 1.0), (0.0, -1.0)
            else:  # top-right corner, slid in along the diagonal
                start, normal = (width - 1.0, 0.0), (-math.sqrt(0.5), math.sqrt(0.5))

            def kept(d):
                return visible_fraction(box_corners(w, h, angle, 1.0, start[0] + d * normal[0],
                                                    start[1] + d * normal[1]), width, height)

            lo, hi = -radius, 2 * radius
            for _ in range(50):
                mid = 0.5 * (lo + hi)
                lo, hi = (lo, mid) if kept(mid) > keep else (mid, hi)
            d = 0.5 * (lo + hi)
            cx, cy = round(start[0] + d * normal[0], 2), round(start[1] + d * normal[1], 2)
            if all(math.hypot(cx - x, cy - y) >= radius + r + 10 for x, y, r in taken):
                taken.append((cx, cy, radius))
                poses.append((angle, 1.0, cx, cy))
                break
        else:
            raise RuntimeError(f"could not clip a part at the {edge} edge")
    poses += _scatter(rng, 5, size, (w, h), gap=10.0, margin=12.0, taken=taken)
    instances = _paste_all(frame, part, poses, size)
    return _scene("clipped", _camera(frame, rng, sigma=0.8, jpeg=92), part, instances,
                  description="7 copies of a 64x48 mission-patch crop clipped by 5-24% at all four edges "
                              "and a corner, plus 5 wholly inside, on grass, 1024x768")


def _near_symmetric() -> Scene:
    rng = np.random.default_rng(404)
    size = (640, 480)
    # The printed "s" of "segmentation" (page), 12x21, doubled to 24x42: an "s" is nearly point-symmetric,
    # so turned 180 degrees it still scores about 0.9 against itself.
    glyph = _gray("page")[13:34, 150:162]
    part = cv2.resize(glyph, (24, 42), interpolation=cv2.INTER_CUBIC)
    frame = _cover(_gray("moon"), *size).astype(np.float32)
    poses = _scatter(rng, 7, size, part.shape[::-1], gap=14.0, margin=6.0)
    instances = _paste_all(frame, part, poses, size)
    frame = _lighting(frame, gain=1.0, gradient=(-0.15, 0.1))
    return _scene("near_symmetric", _camera(frame, rng, sigma=0.8, jpeg=92), part, instances,
                  description="7 copies of a 24x42 printed 's' (page, doubled) whose 180-degree turn scores "
                              "~0.9 against itself, at any angle on the moon, 640x480")


def _thin() -> Scene:
    rng = np.random.default_rng(505)
    size = (1024, 768)
    # A line of printed text, 160x16 (10:1): long, thin, the same along its length at a glance.
    part = _gray("page")[49:65, 12:172].copy()
    frame = _cover(_gray("coffee"), *size).astype(np.float32)
    poses = _scatter(rng, 5, size, part.shape[::-1], gap=10.0, margin=4.0)
    instances = _paste_all(frame, part, poses, size)
    return _scene("thin", _camera(frame, rng, sigma=0.7, jpeg=92), part, instances,
                  description="5 copies of a 160x16 line of printed text (page) at any angle on coffee, 1024x768")


def _flat_centre() -> Scene:
    rng = np.random.default_rng(606)
    size = (512, 512)
    # The known hard case: an elongated 56x28 crop of the saucer's rim whose centre is nearly flat.
    part = _gray("coffee")[352:380, 120:176].copy()
    frame = _gray("camera").astype(np.float32)
    poses = _scatter(rng, 9, size, part.shape[::-1], gap=6.0, margin=3.0)
    instances = _paste_all(frame, part, poses, size)
    return _scene("flat_centre", _camera(frame, rng, sigma=0.7, jpeg=95), part, instances,
                  description="9 copies of coffee_gray[352:380, 120:176] (56x28, flat centre) on camera, 512x512")


_MOSAIC = ["astronaut", "coffee", "chelsea", "rocket", "coins", "moon", "brick", "gravel", "grass",
           "immunohistochemistry", "hubble_deep_field", "page", "retina", "camera", "text", "clock"]


def _tiny_12mp() -> Scene:
    rng = np.random.default_rng(707)
    size = (4000, 3000)
    # The camera man's camera, shrunk (area averaging) from 80x56 to a 26x20 part.
    part = cv2.resize(_gray("camera")[130:186, 236:316], (26, 20), interpolation=cv2.INTER_AREA)
    photos = [p for p in _MOSAIC if p != "camera"]
    frame = _mosaic(photos, *size, columns=4, rows=3, seed=708)
    poses = _scatter(rng, 3, size, part.shape[::-1], gap=200.0, margin=40.0)
    instances = _paste_all(frame, part, poses, size)
    frame = _lighting(frame, gain=1.0, vignette=0.15)
    return _scene("tiny_12mp", _camera(frame, rng, sigma=0.7, jpeg=92), part, instances,
                  description="3 copies of a 26x20 part (the camera man's camera, shrunk) in a 4000x3000 "
                              "mosaic of photographs")


def _large_12mp() -> Scene:
    rng = np.random.default_rng(808)
    size = (4024, 3036)
    # 762x521 of the retina's green channel (where the vessels show), optic disc at its left.
    part = _photo("retina")[380:901, 150:912, 1].copy()
    photos = [p for p in _MOSAIC if p != "retina"]
    frame = _mosaic(photos, *size, columns=4, rows=3, seed=809)
    poses = _scatter(rng, 3, size, part.shape[::-1], gap=40.0, margin=20.0)
    instances = _paste_all(frame, part, poses, size)
    frame = _lighting(frame, gain=1.0, gradient=(0.1, 0.05), vignette=0.1)
    return _scene("large_12mp", _camera(frame, rng, sigma=1.0, jpeg=92), part, instances,
                  description="3 copies of a 762x521 retina crop in a 4024x3036 mosaic of photographs")


def _camera_blur() -> Scene:
    rng = np.random.default_rng(909)
    size = (1024, 768)
    # The patch's lettering ("... HAWLEY ...") and rim, 64x48.
    part = _gray("astronaut")[404:452, 148:212].copy()
    frame = _cover(_gray("chelsea"), *size).astype(np.float32)
    poses = _scatter(rng, 10, size, part.shape[::-1], gap=10.0, margin=6.0)
    instances = _paste_all(frame, part, poses, size)
    frame = _lighting(frame, gain=0.9, gradient=(0.1, 0.1))
    # Camera shake (a 7 px line at 30 degrees) on top of defocus, sensor noise ~8 at mid-grey, JPEG 70.
    out = _camera(frame, rng, sigma=1.5, motion=(7, 30.0), read_noise=6.0, shot_noise=0.22, jpeg=70)
    return _scene("camera_blur", out, part, instances, blurred=True,
                  description="10 copies of a 64x48 patch crop under motion blur (7 px) + defocus (1.5), "
                              "noise ~8, JPEG 70, on chelsea, 1024x768")


def _scaled() -> Scene:
    rng = np.random.default_rng(1010)
    size = (640, 480)
    # The launch tower's lattice (64x48): crossing struts and a strip of horizon.
    part = _gray("rocket")[340:388, 20:84].copy()
    frame = _cover(_gray("immunohistochemistry"), *size).astype(np.float32)
    taken: list[tuple[float, float, float]] = []
    poses = _scatter(rng, 6, size, part.shape[::-1], scales=(0.8, 1.25), gap=10.0, margin=4.0, taken=taken)
    # The range's ends too, where a search's scale grid is least forgiving.
    for end in (0.8, 1.25):
        poses += _scatter(rng, 1, size, part.shape[::-1], scales=(end, end), gap=10.0, margin=4.0, taken=taken)
    instances = _paste_all(frame, part, poses, size)
    frame = _lighting(frame, gain=1.1)
    return _scene("scaled", _camera(frame, rng, sigma=0.8, jpeg=92), part, instances, scales=(0.8, 1.25),
                  description="8 copies of a 64x48 launch-tower crop at any angle and scales 0.8-1.25 on "
                              "tissue (immunohistochemistry), 640x480")


def _colour() -> Scene:
    rng = np.random.default_rng(1111)
    size = (640, 480)
    # The astronaut's eyes and fringe in colour (72x56).
    part = _bgr("astronaut")[60:116, 190:262].copy()
    frame = _cover(_bgr("coffee"), *size).astype(np.float32)
    poses = _scatter(rng, 8, size, (part.shape[1], part.shape[0]), gap=10.0, margin=4.0)
    instances = _paste_all(frame, part, poses, size)
    frame = _lighting(frame, gain=0.9, gradient=(0.2, 0.0))
    return _scene("colour", _camera(frame, rng, sigma=0.8, jpeg=90), part, instances,
                  description="8 copies of a 72x56 BGR crop of the astronaut's eyes at any angle on coffee, "
                              "640x480 BGR")


def _clutter() -> Scene:
    rng = np.random.default_rng(1212)
    size = (1024, 768)
    # The camera man's camera (64x48) among crops of other photographs.
    part = _gray("camera")[134:182, 252:316].copy()
    h, w = part.shape
    frame = _cover(_gray("moon"), *size).astype(np.float32)
    taken: list[tuple[float, float, float]] = []
    poses = _scatter(rng, 6, size, (w, h), gap=8.0, margin=6.0, taken=taken)
    # Distractors: 40 real crops (36-96 px sides) of other photographs, pasted first, clear of the parts.
    sources = ["astronaut", "coffee", "rocket", "coins", "chelsea", "brick", "clock", "page", "text"]
    parts_only = list(taken)
    for _ in range(40):
        source = _gray(sources[int(rng.integers(len(sources)))])
        dw, dh = int(rng.integers(36, 97)), int(rng.integers(36, 97))
        y0 = int(rng.integers(0, source.shape[0] - dh))
        x0 = int(rng.integers(0, source.shape[1] - dw))
        crop = source[y0:y0 + dh, x0:x0 + dw]
        # Distractors may overlap each other but keep 4 px clear of every part.
        (angle, scale, cx, cy), = _scatter(rng, 1, size, (dw, dh), gap=4.0, margin=-20.0, taken=list(parts_only))
        place(frame, crop, angle, scale, cx, cy)
    instances = _paste_all(frame, part, poses, size)
    # A strong lighting gradient: 0.6x at the left to 1.3x at the right, darker corners.
    frame = _lighting(frame, gain=0.95, gradient=(0.7, 0.25), vignette=0.25)
    return _scene("clutter", _camera(frame, rng, sigma=1.0, jpeg=88), part, instances,
                  description="6 copies of a 64x48 crop of the camera man's camera among 40 crops of other "
                              "photographs, under a strong lighting gradient, on the moon, 1024x768")


_BUILDERS: dict[str, Callable[[], Scene]] = {
    "many_small": _many_small,
    "touching": _touching,
    "clipped": _clipped,
    "near_symmetric": _near_symmetric,
    "thin": _thin,
    "flat_centre": _flat_centre,
    "tiny_12mp": _tiny_12mp,
    "large_12mp": _large_12mp,
    "camera_blur": _camera_blur,
    "scaled": _scaled,
    "colour": _colour,
    "clutter": _clutter,
}


def names() -> list[str]:
    """The scenes' names, in a fixed order.

    Returns
    -------
    list of str
    """
    return list(_BUILDERS)


def build(name: str) -> Scene:
    """Build one scene (deterministic: the same arrays every call).

    Parameters
    ----------
    name : str
        One of :func:`names`.

    Returns
    -------
    Scene
    """
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise KeyError(f"no scene {name!r}; scenes: {', '.join(_BUILDERS)}") from None
    return builder()

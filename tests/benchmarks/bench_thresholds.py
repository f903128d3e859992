"""Thresholds that hold on plain templates: the fixed 0.7, the texture rule and the plain decision, on photographs.

    .venv/bin/python tests/benchmarks/bench_thresholds.py [--frames N] [--margins] [--detail] [--light G,O]

Frames: 17 of scikit-image's photographs, each filmed as a short clip: resized to cover
640x480 (the small ones upsampled, so softer), a slow drift of up to 12 pixels with a
slight roll (0.25 degrees) and zoom (0.4%), a defocus blur that varies (0.5 to 1.1
pixels), sensor noise (2.5 grey levels), and the lossy mp4 (mp4v) codec: written and
read back with OpenCV. Gray; with ``--color``, BGR (the photographs' own colours, synthetic
templates tinted), about 3x slower.

Templates, 24 to 96 pixels a side: crops of the clean photographs (in each, the 3 most
textured windows, the 3 plainest, 2 at random), and synthetic ones that are in no
photograph (soft linear and radial gradients, flat patches with a little noise, soft
blobs, step edges, dark or light text on a flat ground). A crop is *present* in its own
photograph's clip and *absent* from every other; a synthetic template is absent from all.

Score: the best value of cv2.matchTemplate's TM_CCOEFF_NORMED map (the engine's maps agree;
a template with no variance scores 0, as in the engine, where OpenCV gives 1) for every
(template, frame), at the server's top_k of 1. An absent pair is *drawn* when its best score
reaches the threshold. A present pair is *found* when its best score reaches the threshold
*and* lies within 3 pixels of the truth. A present template that does not score best at its
own place (a plain patch whose shading recurs nearby, a flat one that scores 0 everywhere) is a
miss under both thresholds: it is counted, as a miss, in both recalls.

The plain decision (the server's default for a plain template, threshold ``texture.PLAIN`` or more): the
pair's peak is its best window, of the 1 + ``PLAIN_SPARE`` best as the server asks them of the
engine, that is lit as the template is (``lighting.lit_alike_window``) and scores at least
``texture.plain_threshold``; ``--light G,O`` films every clip under another lighting (each frame
times G plus O grey levels) to see what a lighting inside or outside its envelope costs.

"Low-texture" templates: the plainest crops and the synthetic gradients, flat patches,
blobs and edges; "textured": the most textured and the random crops; text on its own.

The photographs are split in two halves by name. K, the rule's one constant, is chosen
on half A (``--margins``: the smallest K, in steps of 0.05, that keeps absent pairs drawn
at or under 1%; K_PLAIN likewise, in steps of 0.01); the figures that count are half B's, held out. ``--detail`` lists the
templates the rule still draws and the present ones it loses. About 90 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import skimage.data

from featuremap.service.engine import lighting, texture
from featuremap.service.engine.peaks import find_peaks
from featuremap.service.pipeline.matching import PLAIN_SPARE
from featuremap.service.engine.texture import background_scores, calibrated_threshold, threshold_from_score

FIXED = 0.7
WIDTH, HEIGHT, PAD = 640, 480, 24
SIZES = (24, 32, 48, 64, 96)
TOLERANCE = 3.0  # pixels, for "at the right place"
# Split by photograph: A sets the margin, B reports. (cat is chelsea: left out.)
HALF_A = ("astronaut", "brick", "coffee", "coins", "page", "grass", "moon", "retina")
HALF_B = ("camera", "chelsea", "clock", "gravel", "hubble_deep_field", "immunohistochemistry", "rocket", "text", "cell")
WORDS = ("EXIT", "Total 42", "OPEN", "menu", "Lorem ipsum", "ABC", "score 3:1", "NO ENTRY", "hello", "2026", "zoom", "Cafe")
LOW_TEXTURE = {"plain", "gradient", "radial", "flat", "blob", "edge"}
COLOR = False  # --color: BGR clips and templates


@dataclass
class Template:
    name: str
    kind: str  # textured, random, plain (photograph crops); gradient, radial, flat, blob, edge, text (synthetic)
    half: str
    image: np.ndarray
    photo: str | None = None  # the photograph it was cut from
    xy: tuple[int, int] | None = None  # top-left in the photograph's base image
    threshold: float = FIXED
    background: np.ndarray = field(default_factory=lambda: np.zeros(0))


def photo(name: str) -> np.ndarray:
    """The photograph as gray uint8, resized and cropped to cover the base image."""
    image = getattr(skimage.data, name)()
    if COLOR:
        image = cv2.cvtColor(image[:, :, :3], cv2.COLOR_RGB2BGR) if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3:
        image = cv2.cvtColor(image[:, :, :3], cv2.COLOR_RGB2GRAY)
    h, w = image.shape[:2]
    bw, bh = WIDTH + 2 * PAD, HEIGHT + 2 * PAD
    scale = max(bw / w, bh / h)
    image = cv2.resize(image, (int(np.ceil(w * scale)), int(np.ceil(h * scale))), interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
    y0, x0 = (image.shape[0] - bh) // 2, (image.shape[1] - bw) // 2
    return np.ascontiguousarray(image[y0 : y0 + bh, x0 : x0 + bw])


def clip(base: np.ndarray, frames: int, rng: np.random.Generator, folder: str, name: str):
    """The photograph filmed: frames (gray uint8) read back from an mp4, and each frame's
    affine map from base to frame coordinates."""
    path = os.path.join(folder, f"{name}.mp4")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 25, (WIDTH, HEIGHT))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    centre = (base.shape[1] / 2, base.shape[0] / 2)
    shift = np.zeros(2)
    maps = []
    for _ in range(frames):
        shift = np.clip(shift + rng.uniform(-1.5, 1.5, 2), -PAD / 2, PAD / 2)
        m = cv2.getRotationMatrix2D(centre, rng.uniform(-0.25, 0.25), 1 + rng.uniform(-0.004, 0.004))
        m[:, 2] += shift - PAD
        frame = cv2.warpAffine(base, m, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frame = cv2.GaussianBlur(frame.astype(np.float32), (0, 0), rng.uniform(0.5, 1.1))
        frame = np.clip(frame + rng.normal(0, 2.5, frame.shape), 0, 255).astype(np.uint8)
        writer.write(frame if COLOR else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
        maps.append(m)
    writer.release()
    capture = cv2.VideoCapture(path)
    read = []
    while len(read) < frames:
        ok, frame = capture.read()
        assert ok, f"{path}: only {len(read)} of {frames} frames read back"
        read.append(frame if COLOR else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    capture.release()
    return read, maps


def texture_energy(window: np.ndarray) -> float:
    """Mean gradient magnitude of a window (after a light blur): how textured it is."""
    if window.ndim == 3:
        window = cv2.cvtColor(window, cv2.COLOR_BGR2GRAY)
    w = cv2.GaussianBlur(window.astype(np.float32), (0, 0), 1.0)
    gx, gy = cv2.Sobel(w, cv2.CV_32F, 1, 0), cv2.Sobel(w, cv2.CV_32F, 0, 1)
    return float(np.hypot(gx, gy).mean())


def photo_templates(name: str, half: str, base: np.ndarray, rng: np.random.Generator) -> list[Template]:
    """3 most textured, 3 plainest and 2 random windows, inside the area every frame sees."""
    picked = []
    for kind, count in (("textured", 3), ("plain", 3), ("random", 2)):
        for _ in range(count):
            size = int(rng.choice(SIZES))
            lo, hi_x, hi_y = 2 * PAD, base.shape[1] - 2 * PAD - size, base.shape[0] - 2 * PAD - size
            candidates = [(int(rng.integers(lo, hi_x)), int(rng.integers(lo, hi_y))) for _ in range(300 if kind != "random" else 1)]
            # Not overlapping an earlier pick much: distinct templates.
            candidates = [c for c in candidates if all(abs(c[0] - t.xy[0]) > size // 2 or abs(c[1] - t.xy[1]) > size // 2 for t in picked)] or candidates
            energies = [texture_energy(base[y : y + size, x : x + size]) for x, y in candidates]
            x, y = candidates[int(np.argmax(energies) if kind == "textured" else np.argmin(energies))]
            picked.append(Template(f"{name}/{kind}{len(picked)}", kind, half, base[y : y + size, x : x + size].copy(), name, (x, y)))
    return picked


def synthetic_templates(rng: np.random.Generator) -> list[Template]:
    """Templates in no photograph: plain ones, and text on a flat ground."""
    out = []

    def add(kind, image):
        half = "AB"[len(out) % 2]
        if COLOR:  # tinted: each channel its own gain and offset
            image = image[:, :, None] * rng.uniform(0.6, 1.4, 3) + rng.uniform(-30, 30, 3)
        out.append(Template(f"synthetic/{kind}{len(out)}", kind, half, np.clip(image, 0, 255).astype(np.uint8)))

    for i in range(48):
        size = int(rng.choice(SIZES))
        y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
        kind = ("gradient", "radial", "flat", "blob", "edge", "text", "text", "text")[i % 8]
        level = rng.uniform(40, 210)
        noise = rng.normal(0, 1.0, (size, size))
        if kind == "gradient":
            angle = rng.uniform(0, 2 * np.pi)
            image = level + rng.uniform(8, 60) * (np.cos(angle) * x + np.sin(angle) * y) + noise
        elif kind == "radial":
            cx, cy = rng.uniform(-0.5, 1.5, 2)
            image = level + rng.uniform(10, 50) * np.hypot(x - cx, y - cy) + noise
        elif kind == "flat":
            image = level + rng.normal(0, rng.uniform(0.5, 3), (size, size))
        elif kind == "blob":
            cx, cy = rng.uniform(0.2, 0.8, 2)
            image = level + rng.uniform(-60, 60) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * rng.uniform(0.1, 0.3) ** 2)) + noise
        elif kind == "edge":
            angle = rng.uniform(0, 2 * np.pi)
            step = (np.cos(angle) * (x - 0.5) + np.sin(angle) * (y - 0.5)) > rng.uniform(-0.2, 0.2)
            image = cv2.GaussianBlur((level + rng.uniform(30, 90) * step).astype(np.float32), (0, 0), 1.0) + noise
        else:  # dark (or light) text on a flat ground, as on a sign or a page
            size = int(rng.choice((32, 48, 64, 96)))
            word = WORDS[int(rng.integers(len(WORDS)))]
            ground, ink = (rng.uniform(180, 250), rng.uniform(0, 80)) if rng.random() < 0.7 else (rng.uniform(0, 70), rng.uniform(180, 255))
            width = int(size * rng.uniform(1.5, 3.0))
            image = np.full((size, width), int(ground), np.uint8)
            font = int(rng.choice((cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX)))
            scale = 1.0
            (tw, th), _ = cv2.getTextSize(word, font, scale, 2)
            scale = min((width - 4) / tw, (size - 4) / th) * 0.9
            (tw, th), _ = cv2.getTextSize(word, font, scale, 2)
            cv2.putText(image, word, ((width - tw) // 2, (size + th) // 2), font, scale, int(ink), max(1, int(scale * 1.5)), cv2.LINE_AA)
            image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.6) + rng.normal(0, 1.0, image.shape)
        add(kind, image)
    return out


def truth(template: Template, m: np.ndarray) -> np.ndarray:
    """Where the template's top-left should be in a frame: its centre mapped, less half its size."""
    h, w = template.image.shape[:2]
    centre = np.array([template.xy[0] + w / 2, template.xy[1] + h / 2, 1.0])
    return m @ centre - np.array([w / 2, h / 2])


def measure(templates, clips):
    """The best peaks of every (template, frame), as the server finds them (``find_peaks``: 1 +
    ``PLAIN_SPARE``, half the template apart, best first), each with its score, whether its window
    is lit as the template is (``lighting.lit_alike_window``) and, for present pairs, whether it is
    at the right place."""
    absent, present = [], []  # (template index, peaks: rows of score, lit alike[, at place])
    for ti, t in enumerate(templates):
        flat = bool(np.all(np.ptp(t.image.reshape(-1, t.image.shape[2] if t.image.ndim == 3 else 1), axis=0) == 0))
        h, w = t.image.shape[:2]
        for name, (frames, maps) in clips.items():
            for frame, m in zip(frames, maps):
                score_map = cv2.matchTemplate(frame, t.image, cv2.TM_CCOEFF_NORMED)
                score_map[~np.isfinite(score_map)] = 0
                if flat:  # OpenCV scores a flat template 1 everywhere; the engine 0 ("no evidence")
                    score_map[:] = 0
                place = truth(t, m) if t.photo == name else None
                rows = []
                for peak in find_peaks(score_map, method="ccoeff_normed", top_k=1 + PLAIN_SPARE,
                                       min_distance=max(1, min(h, w) // 2)):
                    x, y = int(peak.x), int(peak.y)
                    alike = lighting.lit_alike_window(as_hwc(t.image), None, as_hwc(frame[y:y + h, x:x + w]))
                    at_place = place is not None and float(np.hypot(*(np.array((x, y)) - place))) <= TOLERANCE
                    rows.append((peak.score, alike, at_place))
                peaks = np.array(rows, float)
                if t.photo == name:
                    present.append((ti, peaks))
                else:
                    absent.append((ti, peaks[:, :2]))
    return absent, present


def decided(pairs, thresholds, gate) -> tuple[np.ndarray, np.ndarray]:
    """For each pair, whether a peak counts (the server's top_k=1 decision) and the row it is: the best
    peak at its template's threshold, or for a gated template the best at it that is lit alike."""
    counts = np.zeros(len(pairs), bool)
    chosen = []
    for i, (ti, peaks) in enumerate(pairs):
        ok = peaks[:, 0] >= thresholds[ti]
        ok &= peaks[:, 1] > 0 if gate[ti] else np.arange(len(peaks)) == 0
        hit = np.flatnonzero(ok)
        counts[i] = len(hit) > 0
        chosen.append(peaks[hit[0]] if len(hit) else None)
    return counts, chosen


def as_hwc(image: np.ndarray) -> np.ndarray:
    return image.reshape(image.shape[0], image.shape[1], -1)


def lit(clips, gain: float, offset: float):
    """The clips' frames under another lighting than the photographs the templates were cut from."""
    if (gain, offset) == (1.0, 0.0):
        return clips
    return {name: ([np.clip(f.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8) for f in frames], maps)
            for name, (frames, maps) in clips.items()}


def summarise(templates, absent, present, thresholds, gated=None) -> dict:
    """Absent pairs drawn and present ones found at per-template ``thresholds``; where ``gated`` (per
    template) is true, a pair counts only when its window is also lit alike."""
    thr = np.array(thresholds)
    gate = np.zeros(len(templates), bool) if gated is None else np.array(gated, bool)
    a_t = np.array([i for i, _ in absent], int)
    p_t = np.array([i for i, _ in present], int)
    drawn, _ = decided(absent, thr, gate)
    counted, chosen = decided(present, thr, gate)
    found = counted & np.array([c is not None and c[2] > 0 for c in chosen], bool)
    low = np.array([t.kind in LOW_TEXTURE for t in templates])
    return dict(
        absent_pct=100 * drawn.mean(),
        absent_n=len(drawn),
        absent_low_pct=100 * drawn[low[a_t]].mean(),
        absent_templates=len(set(a_t[drawn].tolist())),
        recall=100 * found.mean(),
        present_n=len(found),
        recall_textured=100 * found[~low[p_t]].mean(),
        recall_low=100 * found[low[p_t]].mean(),
        drawn=drawn,
        found=found,
    )


def rule(background: np.ndarray, k: float) -> float:
    """The texture rule with another K (for the table that chooses it)."""
    return threshold_from_score(float(background.max()), "ccoeff_normed", k)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=6, help="frames per clip (default 6)")
    parser.add_argument("--margins", action="store_true", help="print absent/recall on half A for a range of K (the rule's margin)")
    parser.add_argument("--color", action="store_true", help="BGR clips and templates (about 3x slower)")
    parser.add_argument("--detail", action="store_true", help="list the templates the rule still draws, and the present ones it loses")
    parser.add_argument("--light", default="1,0", metavar="GAIN,OFFSET",
                        help="the clips under another lighting: every frame times GAIN plus OFFSET grey levels (default 1,0)")
    args = parser.parse_args()
    gain, offset = (float(v) for v in args.light.split(","))
    global COLOR
    COLOR = args.color
    cv2.setNumThreads(2)
    rng = np.random.default_rng(7)
    start = time.perf_counter()
    synthetic = synthetic_templates(rng)
    halves = {}
    with tempfile.TemporaryDirectory() as folder:
        for half, names in (("A", HALF_A), ("B", HALF_B)):
            templates = [t for t in synthetic if t.half == half]
            clips = {}
            for name in names:
                base = photo(name)
                templates += photo_templates(name, half, base, rng)
                clips[name] = clip(base, args.frames, rng, folder, name)
            halves[half] = (templates, clips)
    # The rule's threshold for every template (both halves), and its cost on one core.
    t0 = time.perf_counter()
    texture.backgrounds()
    made = time.perf_counter() - t0
    for templates, _ in halves.values():
        for t in templates:
            t.threshold = calibrated_threshold(t.image, "ccoeff_normed")
            t.background = background_scores(t.image)
    # Cost on one core: each 64x64 template's best of 3 (the machine may be shared), bare
    # and with a binary mask (a disc).
    cv2.setNumThreads(1)
    disc = cv2.circle(np.zeros((64, 64), np.uint8), (32, 32), 30, 1, -1)
    costs = {"bare": [], "masked": []}
    for templates, _ in halves.values():
        for t in templates:
            if t.image.shape[:2] == (64, 64):
                for kind, mask in (("bare", None), ("masked", disc)):
                    runs = []
                    for _ in range(3):
                        t0 = time.perf_counter()
                        calibrated_threshold(t.image, "ccoeff_normed", mask)
                        runs.append(time.perf_counter() - t0)
                    costs[kind].append(min(runs))
    cv2.setNumThreads(2)
    results = {half: measure(halves[half][0], lit(halves[half][1], gain, offset)) for half in halves}

    print(f"scikit-image photographs as {args.frames}-frame mp4 clips, {WIDTH}x{HEIGHT} {'BGR' if COLOR else 'gray'}; TM_CCOEFF_NORMED, best of each map")
    print(f"rule: threshold = max({FIXED}, tanh(K atanh(s))), s = best score on {len(texture.backgrounds())} procedural backgrounds, K = {texture.K}")
    print(f"plain decision: a plain template (threshold {texture.PLAIN} or more) counts at max({FIXED}, tanh(K_PLAIN atanh(s))), K_PLAIN = {texture.K_PLAIN},"
          f" where its window is lit alike (gain {lighting.GAIN[0]}-{lighting.GAIN[1]}, offset +-{lighting.OFFSET:g}; contrast"
          f" {lighting.CONTRAST[0]}-{lighting.CONTRAST[1]}, mean within {lighting.MEAN_TOLERANCE:g})")
    if (gain, offset) != (1.0, 0.0):
        print(f"the clips lit otherwise: every frame x {gain:g} {offset:+g} grey levels")
    print()
    if args.margins:
        templates, _ = halves["A"]
        absent, present = results["A"]
        print("half A (chooses K: the smallest with absent pairs drawn <= 1%)")
        print("     K  absent drawn  recall")
        for k in (1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.4):
            s = summarise(templates, absent, present, [rule(t.background, k) for t in templates])
            print(f"  {k:4.2f}  {s['absent_pct']:10.2f}%  {s['recall']:5.1f}%")
        print("half A, the plain decision (chooses K_PLAIN the same way)")
        print("  K_PLAIN  absent drawn  recall")
        plain = [texture.is_plain(t.threshold) for t in templates]
        for k in (0.9, 0.95, 0.97, 0.98, 0.99, 1.0, 1.01, 1.02, 1.03, 1.05, 1.08, 1.1):
            thresholds = [rule(t.background, k) if p else t.threshold for t, p in zip(templates, plain)]
            s = summarise(templates, absent, present, thresholds, plain)
            print(f"  {k:7.2f}  {s['absent_pct']:10.2f}%  {s['recall']:5.1f}%")
        print()
    for half in ("A", "B"):
        templates, clips = halves[half]
        absent, present = results[half]
        n_low = sum(t.kind in LOW_TEXTURE for t in templates)
        n_text = sum(t.kind == "text" for t in templates)
        n_photo = sum(t.photo is not None for t in templates)
        role = "held out: the figures that count" if half == "B" else "chooses K"
        print(f"half {half} ({role}): {len(clips)} photographs ({', '.join(clips)})")
        print(f"  templates: {len(templates)} ({n_photo} cut from these photographs, each present in its own clip and absent from the others;"
              f" {len(templates) - n_photo} synthetic, absent from all); low-texture {n_low}, text {n_text}")
        present_low = sum(t.kind in LOW_TEXTURE for t in templates if t.photo)
        flat = sum(int(t.image.min() == t.image.max()) for t in templates if t.photo)
        raised = [t for t in templates if t.threshold > FIXED]
        print(f"  present: {n_photo} templates x {args.frames} frames, {present_low} of them low-texture ({flat} with no variance at all: never found);"
              f" the rule raises {len(raised)} thresholds above {FIXED} ({sum(t.kind in LOW_TEXTURE for t in raised)} low-texture, median {np.median([t.threshold for t in raised]):.3f})")
        plain = [texture.is_plain(t.threshold) for t in templates]
        rows = (("fixed 0.7", [FIXED] * len(templates), None), ("texture rule", [t.threshold for t in templates], None),
                ("plain decision", [texture.plain_threshold(t.threshold) for t in templates], plain))
        for label, thresholds, gated in rows:
            s = summarise(templates, absent, present, thresholds, gated)
            print(f"  {label:14} absent pairs drawn {s['absent_pct']:6.2f}% of {s['absent_n']} ({s['absent_templates']} templates; low-texture pairs {s['absent_low_pct']:.2f}%)"
                  f"   recall {s['recall']:5.1f}% of {s['present_n']} present pairs (textured {s['recall_textured']:.1f}%, low-texture {s['recall_low']:.1f}%)")
        if args.detail:
            fixed = summarise(templates, absent, present, [FIXED] * len(templates))
            s = summarise(templates, absent, present, rows[2][1], plain)
            a_t = np.array([i for i, _ in absent])
            for ti in sorted(set(a_t[s["drawn"]].tolist())):
                t = templates[ti]
                scores = [peaks[0, 0] for i, peaks in absent if i == ti]
                limit = rows[2][1][ti]
                print(f"    still drawn: {t.name} {t.image.shape} threshold {limit:.3f} (backgrounds' best {t.background.max():.3f});"
                      f" {int((s['drawn'] & (a_t == ti)).sum())} of {len(scores)} pairs, best absent score {max(scores):.3f}")
            p_t = np.array([i for i, _ in present])
            for ti in sorted(set(p_t[fixed["found"] & ~s["found"]].tolist())):
                t = templates[ti]
                true = [row[0] for i, peaks in present if i == ti for row in peaks if row[2] > 0] or [float("nan")]
                worst_absent = max(peaks[0, 0] for i, peaks in absent if i == ti)
                print(f"    lost: {t.name} {t.image.shape} threshold {rows[2][1][ti]:.3f}; at its place it scores {min(true):.3f}-{max(true):.3f},"
                      f" where it is absent up to {worst_absent:.3f}; found in {int((fixed['found'] & (p_t == ti)).sum())} frames at 0.7, {int((s['found'] & (p_t == ti)).sum())} with the plain decision")
    print(f"\nregistration cost of calibrated_threshold, one core, 64x64 templates ({len(costs['bare'])}): median {1000 * np.median(costs['bare']):.1f} ms"
          f" (max {1000 * max(costs['bare']):.1f}), with a binary mask {1000 * np.median(costs['masked']):.1f} ms;"
          f" once per process, the backgrounds are made in {1000 * made:.0f} ms")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

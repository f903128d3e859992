"""Which templates of the bank a source's frames can be matched with, said before the first frame.

The server converts a frame to each template's layout (gray <-> BGR, BGRA's
alpha dropped), so layouts never keep a template out. What does is size: under
the default padding a template (or one of its scaled and turned variants)
larger than the frame fails the whole call, and a pose template none of whose
poses fits is refused. The command leaves those out and names them, by id, in
one line, instead of the call failing on "template 2" or the user wondering
why a template never shows.
"""

from __future__ import annotations

from collections.abc import Iterable

from featuremap.boxes import resized_size, turned_canvas

from .client import FeatureMapClient, TemplateInfo

#: The layouts a frame is converted to: gray, BGR, BGRA.
LAYOUTS = (1, 3, 4)


def _resized(template: TemplateInfo, scale: float) -> tuple[int, int]:
    return resized_size(template.height, template.width, scale)


def why_not(template: TemplateInfo, height: int, width: int) -> str | None:
    """Why ``template`` cannot be matched against frames of ``height`` x ``width`` (None: it can).

    Parameters
    ----------
    template : TemplateInfo
        As listed (sizes, scales, angles and ranges; no pixels needed).
    height, width : int
        The frames' size.

    Returns
    -------
    str or None
        The reason, in a few words ("300x200, larger than the 240x160 frame").
    """
    if template.channels not in LAYOUTS:
        return f"{template.channels} channels, which no frame converts to"

    def fits(w: int, h: int) -> bool:
        return w <= width and h <= height

    if template.angle_range is not None or template.scale_range is not None:
        # Pose search needs one pose, at its smallest scale, whose turned canvas fits.
        low, high = template.angle_range or (0.0, 0.0)
        scale = template.scale_range[0] if template.scale_range else 1.0
        w, h = _resized(template, scale)
        angles = [low + (high - low) * i / 90 for i in range(91)] + [a for a in (0.0, 90.0, -90.0) if low <= a <= high]
        if not any(fits(*turned_canvas(w, h, a)) for a in angles):
            return f"no pose fits: at scale {scale:g} it is {w}x{h}, larger than the {width}x{height} frame"
        return None
    for scale in template.scales:
        for angle in template.angles:
            w, h = turned_canvas(*_resized(template, scale), angle)
            if not fits(w, h):
                at = "" if (scale, angle) == (1.0, 0.0) else f" at scale {scale:g}, angle {angle:g}"
                return f"{w}x{h}{at}, larger than the {width}x{height} frame"
    return None


def matchable(client: FeatureMapClient, wanted: Iterable[str] | None, height: int,
              width: int) -> tuple[list[str] | None, list[tuple[str, str]]]:
    """The templates to match against frames of ``height`` x ``width``, and those left out with why.

    Parameters
    ----------
    client : FeatureMapClient
    wanted : iterable of str, optional
        Ids or names asked for; None: the whole bank.
    height, width : int
        The source's frame size.

    Returns
    -------
    (list of str or None, list of (str, str))
        The ids to ask for (None: the whole bank, when nothing is left out of
        it; names not in the bank are kept, for the server to say so), and
        the (id, reason) of each template left out.
    """
    asked = None if wanted is None else [name.split("/", 1)[-1] if name.startswith("templates/") else name
                                         for name in wanted]
    bank = [t for t in client.list_templates() if asked is None or t.id in asked]
    left_out = [(t.id, reason) for t in bank if (reason := why_not(t, height, width)) is not None]
    if not left_out:
        return asked, []
    out = {tid for tid, _ in left_out}
    keep = [t.id for t in bank if t.id not in out] if asked is None else [a for a in asked if a not in out]
    return keep, left_out


def left_out_line(command: str, source: str, left_out: list[tuple[str, str]]) -> str:
    """The one line that names every template left out, and why."""
    count = f"{len(left_out)} template{'s' if len(left_out) > 1 else ''}"
    reasons = "; ".join(f"{tid} ({reason})" for tid, reason in left_out)
    return f"featuremap {command}: {count} cannot be matched against {source}, left out: {reasons}"

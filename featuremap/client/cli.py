"""The ``featuremap`` command.

Exit codes: 0 ok, 1 usage error (bad flags, bad settings), 2 server or I/O
error (unreachable server, missing file, unreadable source). Expected
failures print one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from .flags import address as _address
from .flags import count as _count
from .flags import number as _number
from .flags import add_match_flags as _add_match_options
from .flags import positive_float as _positive_float
from .flags import positive_int as _positive_int
from .runs import FAILURE, USAGE, CommandError, client_from, match_settings, watch


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors: one line, exit 1 (not argparse's usage block and 2)
        self.exit(USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- serve (the server's own command, imported only when asked for) -----------


def _server_command(argv: list[str]) -> int:
    """``featuremap serve|warmup ...``: ``featuremap-server serve|warmup ...`` (kept as an alias)."""
    from featuremap.service.edge.command import main as server_main

    return server_main(argv, prog="featuremap")

# -- client commands ----------------------------------------------------------


def _read_image(path: str, what: str):
    import cv2

    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise CommandError(f"cannot read {what} {path}: no such file, or not an image OpenCV reads")
    return image


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"--label {pair!r}: use key=value", USAGE)
        labels[key] = value
    return labels


def _numbers(text: str | None, flag: str) -> list[float]:
    if not text:
        return []
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise CommandError(f"{flag} {text!r}: use comma-separated numbers, e.g. 0.5,1,2", USAGE) from None


def _range(text: str | None, flag: str) -> tuple[float, float] | None:
    """``--angle-range=-180,180`` as (-180.0, 180.0)."""
    if text is None:
        return None
    numbers = _numbers(text, flag)
    if len(numbers) != 2:
        raise CommandError(f"{flag} {text!r}: give low,high, e.g. {flag}=-180,180", USAGE)
    return numbers[0], numbers[1]


def _roi(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise CommandError(f"--roi {text!r}: use x,y,w,h in pixels", USAGE) from None
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise CommandError(f"--roi {text!r}: x, y must be >= 0 and w, h > 0", USAGE)
    return x, y, w, h


def _template_json(t) -> dict:
    return {"name": t.name, "display_name": t.display_name, "height": t.height, "width": t.width,
            "channels": t.channels, "labels": t.labels, "etag": t.etag, "scales": list(t.scales),
            "angles": list(t.angles), "angle_range": t.angle_range and list(t.angle_range),
            "scale_range": t.scale_range and list(t.scale_range), "texture_threshold": t.texture_threshold}


def _templates_add(args) -> int:
    from featuremap.client import AlreadyExistsError
    from featuremap.client.video import SourceError, open_source

    if args.from_video:
        if args.frame is None or args.roi is None:
            raise CommandError("--from-video needs --frame N and --roi x,y,w,h", USAGE)
        x, y, w, h = _roi(args.roi)
        try:
            with open_source(args.from_video) as source:
                frame = next((f for i, _, f in source if i == args.frame), None)
        except SourceError as error:
            raise CommandError(str(error)) from None
        if frame is None:
            raise CommandError(f"{args.from_video} has no frame {args.frame}")
        if y + h > frame.shape[0] or x + w > frame.shape[1]:
            raise CommandError(f"--roi {args.roi} is outside the {frame.shape[1]}x{frame.shape[0]} frame", USAGE)
        image = frame[y:y + h, x:x + w].copy()
    elif args.image:
        if args.roi is not None or args.frame is not None:
            raise CommandError("--roi and --frame go with --from-video VIDEO", USAGE)
        _read_image(args.image, "image")  # readable, or said here; the client sends the file (and names it in notes)
        image = args.image
    else:
        raise CommandError("give an IMAGE, or --from-video VIDEO --frame N --roi x,y,w,h", USAGE)
    if args.mask:
        _read_image(args.mask, "mask")
    if args.replace and not args.id:
        raise CommandError("--replace goes with --id ID (the template it replaces)", USAGE)
    try:
        with client_from(args) as client:
            created = _add(client, args, image)
    except AlreadyExistsError:
        raise CommandError(f"featuremap templates: a template {args.id} exists: add --replace to replace it, or "
                           "pick another --id") from None
    if created.texture_threshold >= LITTLE_TEXTURE:
        print(f"featuremap templates: note: {created.id} has little texture (a gradient, a flat patch or an "
              f"edge fits windows of any scene): by default (ccoeff_normed) it counts as found only where it "
              f"fits better than chance windows do and its window is lit as it is (a gain of 0.6-1.6, an offset "
              f"of up to 30 grey levels; a pose template, or on 16-bit and float images: where it scores at least "
              f"{created.texture_threshold:.3f}); crop more of the part, or give --threshold", file=sys.stderr)
    print(json.dumps(_template_json(created)))
    return 0


#: A texture threshold at or above which ``templates add`` says the template has little texture
#: (higher than the server's ``texture.PLAIN``: the note is for templates only a near-perfect
#: match tells from chance).
LITTLE_TEXTURE = 0.95


def _add(client, args, image):
    """``templates add``'s call, once its image is known."""
    return client.create_template(image, template_id=args.id, display_name=args.name, labels=_labels(args.label),
                                  mask=args.mask, scales=_numbers(args.scales, "--scales"),
                                  angles=_numbers(args.angles, "--angles"),
                                  angle_range=_range(args.angle_range, "--angle-range"),
                                  scale_range=_range(args.scale_range, "--scale-range"), replace=args.replace)


def _templates_list(args) -> int:
    with client_from(args) as client:
        for template in client.list_templates():
            print(json.dumps(_template_json(template)))
    return 0


def _templates_get(args) -> int:
    with client_from(args) as client:
        template = client.get_template(args.id)
    if args.out:
        from featuremap.client.render import write_image

        write_image(args.out, template.image)
    print(json.dumps(_template_json(template)))
    return 0


def _templates_rm(args) -> int:
    with client_from(args) as client:
        client.delete_template(args.id)
    return 0


def _match(args) -> int:
    from featuremap.client import render
    from featuremap.client.watch import peaks_json

    from featuremap.client.fitting import left_out_line, matchable

    frame = _read_image(args.image, "image")
    want_maps = bool(args.heatmap)
    settings = match_settings(args)
    with client_from(args) as client:
        # Templates the image is too small for are named, by id, and left out, not the call failed on them.
        keep, left_out = matchable(client, settings["templates"], *frame.shape[:2])
        if left_out:
            line = left_out_line("match", args.image, left_out)
            if not keep:
                raise CommandError(line.replace(", left out:", ":") + "; nothing left to match")
            print(line, file=sys.stderr)
        result = client.match(frame, maps="float32" if want_maps else None, **{**settings, "templates": keep})
    print(json.dumps({"peaks": peaks_json(result.peaks)}))
    if args.overlay:
        render.write_image(args.overlay, render.draw_peaks(frame, result.peaks))
    if args.heatmap:
        heat = render.result_heatmap(frame, result, args.method)
        if heat is None:
            raise CommandError("the server sent no map: no template was matched (see featuremap templates list)")
        render.write_image(args.heatmap, heat)
    return 0


def _watch(args) -> int:
    from featuremap.client.watch import summary_line

    summary = watch(args, progress=True)
    sys.stderr.write(summary_line(summary) + "\n")
    return 130 if summary["interrupted"] else 0


def _demo(args) -> int:
    from featuremap.client.demo import run_demo

    return run_demo(args)

# -- the parser -----------------------------------------------------------


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", type=_address, default=os.environ.get("FEATUREMAP_ADDRESS", "localhost:50051"),
                        help="server host:port, or several comma-separated (env FEATUREMAP_ADDRESS; default "
                             "localhost:50051)")
    parser.add_argument("--timeout", type=_positive_float, default=30.0, help="seconds per call (default 30)")
    parser.add_argument("--verbose", action="store_true", help="let gRPC and OpenCV log to stderr too")
    parser.add_argument("--token", default=os.environ.get("FEATUREMAP_TOKEN"),
                        help="bearer token (env FEATUREMAP_TOKEN)")
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument("--ca-file", help="PEM CA bundle of the server's certificate (implies --tls)")
    parser.add_argument("--cert-file", help="client certificate, for mutual TLS (implies --tls)")
    parser.add_argument("--key-file", help="client key, for mutual TLS")


_SERVER_COMMANDS = ("serve", "warmup")
_NUMBER_LISTS = ("--angles", "--scales", "--angle-range", "--scale-range")


def _negative_lists(argv: list[str]) -> list[str]:
    """``--angles -30,0,30`` as ``--angles=-30,0,30``: argparse takes a value starting with '-' for a flag."""
    out: list[str] = []
    for token in argv:
        if out and out[-1] in _NUMBER_LISTS and token.startswith("-") and token[1:2].isdigit():
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def build_parser() -> argparse.ArgumentParser:
    from featuremap import __version__

    parser = _Parser(prog="featuremap", description="Streaming template matching.")
    parser.add_argument("--version", action="version", version=f"featuremap {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    # Listed for --help; main() hands them to the server's command before parsing.
    commands.add_parser("serve", help="run the gRPC server (the same as featuremap-server serve)", add_help=False)
    commands.add_parser("warmup", help="compile every kernel into the cache (featuremap-server warmup)",
                        add_help=False)
    _add_templates_command(commands)
    _add_match_command(commands)
    _add_watch_command(commands)
    _add_demo_command(commands)
    return parser


def _add_templates_command(commands) -> None:
    """``featuremap templates add|list|get|rm``."""
    templates = commands.add_parser("templates", help="manage the template bank")
    actions = templates.add_subparsers(dest="action", required=True, parser_class=_Parser)
    add = actions.add_parser("add", help="add a template from an image or a video frame")
    add.add_argument("image", nargs="?", help="image file")
    add.add_argument("--id", help="template id (default: generated)")
    add.add_argument("--name", help="display name")
    add.add_argument("--label", action="append", metavar="KEY=VALUE", help="a label (repeat)")
    add.add_argument("--mask", help="mask image (non-zero counts; wins over an alpha channel, which is the mask "
                                    "otherwise)")
    add.add_argument("--replace", action="store_true", help="with --id: replace a template of that id if there is "
                                                             "one (so a script can run again)")
    add.add_argument("--from-video", metavar="VIDEO", help="cut the template from a frame of this video")
    add.add_argument("--frame", type=int, help="with --from-video: the frame index (from 0)")
    add.add_argument("--roi", help="with --from-video: x,y,w,h")
    add.add_argument("--scales", help="also look for it at these scales, e.g. 0.5,1,2")
    add.add_argument("--angles", help="also look for it rotated by these degrees, e.g. -30,0,30")
    add.add_argument("--angle-range", help="find it at any angle in low,high degrees (pose search, sub-degree), "
                                           "e.g. -180,180; not with --scales/--angles")
    add.add_argument("--scale-range", help="find it at any scale in low,high (pose search), e.g. 0.75,1.33")
    add.set_defaults(run=_templates_add)
    listing = actions.add_parser("list", help="list the bank, one JSON line per template")
    listing.set_defaults(run=_templates_list)
    get = actions.add_parser("get", help="show a template; --out writes its image")
    get.add_argument("id")
    get.add_argument("--out", help="write the image here (.png)")
    get.set_defaults(run=_templates_get)
    remove = actions.add_parser("rm", help="delete a template")
    remove.add_argument("id")
    remove.set_defaults(run=_templates_rm)
    for sub in (add, listing, get, remove):
        _add_client_options(sub)


def _add_match_command(commands) -> None:
    """``featuremap match IMAGE``."""
    match = commands.add_parser("match", help="match one image; print the peaks as JSON")
    match.add_argument("image")
    _add_match_options(match, "match")
    match.add_argument("--heatmap", metavar="OUT.png", help="write the first template's map over the image")
    match.add_argument("--overlay", metavar="OUT.png", help="write the image with the peaks drawn")
    _add_client_options(match)
    match.set_defaults(run=_match)


def _add_watch_command(commands) -> None:
    """``featuremap watch SOURCE``."""
    watch_ = commands.add_parser("watch", help="stream a video, camera or RTSP source through the server")
    watch_.add_argument("source", help="video file, camera index, rtsp:// or http:// URL, image, folder or glob")
    _add_match_options(watch_, "watch", but=("realtime",))  # --realtime with the stream's own flags
    watch_.add_argument("--out", metavar="OVERLAY.mp4", help="write the frames with the peaks drawn")
    watch_.add_argument("--heatmap-out", metavar="HEAT.mp4", help="write the first template's map over the frames")
    watch_.add_argument("--fps", type=_number(0.0, 1000.0, open_low=True), default=None,
                        help="frame rate of the written videos (default: the source's; 25 for images and folders)")
    watch_.add_argument("--jsonl", metavar="FILE", help="write one JSON line per answered frame")
    _add_match_options(watch_, "watch", only=("realtime",))
    watch_.add_argument("--max-frames", type=_positive_int, help="stop after this many frames")
    watch_.add_argument("--window", type=_positive_int, default=4, help="frames in flight (default 4)")
    watch_.add_argument("--source-timeout", type=_positive_float, default=5.0,
                        help="live sources: seconds to open, and between frames, before the source counts as lost "
                             "(default 5)")
    watch_.add_argument("--max-reconnects", type=_count, default=5,
                        help="live sources: attempts to reconnect a lost source, with backoff (default 5)")
    _add_client_options(watch_)
    watch_.set_defaults(run=_watch)


def _add_demo_command(commands) -> None:
    """``featuremap demo``."""
    demo = commands.add_parser("demo", help="the main job on embedded defaults: video in, detections out")
    demo.add_argument("--out-dir", default="demo-out", help="where the outputs go (default demo-out)")
    demo.add_argument("--frames", type=_positive_int, default=90, help="frames of the sample video (default 90)")
    _add_client_options(demo)
    # No --address: use a server at FEATUREMAP_ADDRESS or localhost:50051 if one answers, else start one.
    demo.set_defaults(run=_demo, address=None)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``featuremap`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _SERVER_COMMANDS:
        return _server_command(argv)
    if "--verbose" not in argv:
        # gRPC's C core and OpenCV (and its FFmpeg) log to stderr on their own:
        # keep stderr to our one-line messages. Read when they load, so now.
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    args = build_parser().parse_args(_negative_lists(argv))

    def note(message, category, filename, lineno, file=None, line=None) -> None:  # what the client changed: one line
        print(f"featuremap {args.command}: note: {message}", file=sys.stderr)

    warnings.showwarning = note
    try:
        return args.run(args)
    except CommandError as error:
        print(str(error), file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 - a client error the user can act on, in one line
        from featuremap.client import FeatureMapError

        if isinstance(error, (FeatureMapError, OSError)):
            print(f"featuremap {args.command}: {error}", file=sys.stderr)
            return FAILURE
        raise


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: the demo and
    # watch import featuremap.client.cli, and its CommandError must be the one caught.
    from featuremap.client.cli import main as _main

    sys.exit(_main())

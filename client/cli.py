"""The ``featuremap`` command.

Exit codes: 0 ok, 1 usage error (bad flags, bad settings), 2 server or I/O
error (unreachable server, missing file, unreadable source). Expected
failures print one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

USAGE, FAILURE = 1, 2


class CommandError(Exception):
    """An expected failure: its message is the one line the user sees."""

    def __init__(self, message: str, code: int = FAILURE) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors exit 1, not argparse's 2
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"{self.prog}: error: {message}\n")

# -- serve (the server's own command, imported only when asked for) -----------


def _server_command(argv: list[str]) -> int:
    """``featuremap serve|warmup ...``: ``featuremap-server serve|warmup ...`` (kept as an alias)."""
    from featuremap.service.command import main as server_main

    return server_main(argv, prog="featuremap")

# -- client commands ----------------------------------------------------------


def _client(args):
    from featuremap.client import FeatureMapClient

    return FeatureMapClient(args.address, timeout=args.timeout, token=args.token, tls=args.tls,
                            ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file)


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
            "angles": list(t.angles)}


def _templates_add(args) -> int:
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
        image = _read_image(args.image, "image")
    else:
        raise CommandError("give an IMAGE, or --from-video VIDEO --frame N --roi x,y,w,h", USAGE)
    mask = _read_image(args.mask, "mask") if args.mask else None
    with _client(args) as client:
        created = client.create_template(image, template_id=args.id, display_name=args.name,
                                         labels=_labels(args.label), mask=mask, scales=_numbers(args.scales, "--scales"),
                                         angles=_numbers(args.angles, "--angles"))
    print(json.dumps(_template_json(created)))
    return 0


def _templates_list(args) -> int:
    with _client(args) as client:
        for template in client.list_templates():
            print(json.dumps(_template_json(template)))
    return 0


def _templates_get(args) -> int:
    with _client(args) as client:
        template = client.get_template(args.id)
    if args.out:
        from featuremap.client.render import write_image

        write_image(args.out, template.image)
    print(json.dumps(_template_json(template)))
    return 0


def _templates_rm(args) -> int:
    with _client(args) as client:
        client.delete_template(args.id)
    return 0


def _match_settings(args) -> dict:
    return dict(templates=args.template or None, method=args.method, top_k=args.top_k, threshold=args.threshold)


def _peaks_json(peaks) -> list[dict]:
    return [{"template": p.template, "x": round(p.x, 2), "y": round(p.y, 2), "width": p.width,
             "height": p.height, "score": round(p.score, 5), "scale": p.scale, "angle": p.angle} for p in peaks]


def _match(args) -> int:
    from featuremap.client import render

    frame = _read_image(args.image, "image")
    want_maps = bool(args.heatmap)
    with _client(args) as client:
        result = client.match(frame, maps="float32" if want_maps else None, **_match_settings(args))
    print(json.dumps({"peaks": _peaks_json(result.peaks)}))
    if args.overlay:
        render.write_image(args.overlay, render.draw_peaks(frame, result.peaks))
    if args.heatmap:
        heat = render.result_heatmap(frame, result, args.method)
        if heat is None:
            raise CommandError("the server sent no map: is any template of the bank the image's channel count?")
        render.write_image(args.heatmap, heat)
    return 0


class _Progress:
    """One self-overwriting status line on stderr: frames, fps, skipped."""

    def __init__(self, total: int | None, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.frames = self.skipped = 0
        self.started = time.perf_counter()
        self._shown = 0.0

    def update(self, skipped: int) -> None:
        self.frames += 1
        self.skipped += skipped
        now = time.perf_counter()
        if self.enabled and now - self._shown > 0.2:
            self._shown = now
            self._print("\r")

    def fps(self) -> float:
        return self.frames / max(1e-9, time.perf_counter() - self.started)

    def _print(self, end: str) -> None:
        of = f"/{self.total}" if self.total else ""
        sys.stderr.write(f"{end}frames {self.frames}{of}  {self.fps():5.1f} fps  skipped {self.skipped}   ")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            self._print("\r")
            sys.stderr.write("\n")


_RECONNECTS = 5


def _record(result, frame, args, results: list, lines, overlay, heat) -> None:
    """One answered frame into the summary and every output asked for."""
    from featuremap.client import render

    entry = {"sequence": result.sequence, "timestamp": result.timestamp, "peaks": _peaks_json(result.peaks),
             "skipped": result.skipped}
    results.append(entry)
    if lines:
        lines.write(json.dumps(entry) + "\n")
    if overlay is not None and frame is not None:
        overlay.write(render.draw_peaks(frame, result.peaks))
    if heat is not None and frame is not None and result.maps:
        heat.write(render.result_heatmap(frame, result, args.method))


def watch(args, *, progress: bool = True) -> dict:
    """Stream a source through the server; write what was asked; return a summary."""
    from featuremap.client import FeatureMapError, render
    from featuremap.client.video import SourceError, open_source

    try:
        source = open_source(args.source)
    except SourceError as error:
        raise CommandError(str(error)) from None
    realtime = source.live if args.realtime is None else args.realtime
    limit = args.max_frames
    # Frames sent but not yet answered, in order: resent on another replica
    # when the one serving the stream goes away, so every frame gets a result.
    unanswered: dict[int, tuple] = {}
    read_lock = threading.Lock()
    reader = iter(source)

    closed = []  # set (under read_lock) once the source is released
    broken: list[Exception] = []  # a source error met by gRPC's sender thread, re-raised here

    def frames():
        yield from list(unanswered.values())
        while True:
            # gRPC's sender thread pulls frames; the lock keeps an abandoned
            # stream's sender and a new one apart, and both away from a
            # source that is being released (reading a released capture
            # crashes the process).
            with read_lock:
                if closed or broken:
                    return
                try:
                    item = next(reader, None)
                except SourceError as error:
                    broken.append(error)
                    return
                if item is None or (limit is not None and item[0] >= limit):
                    return
                unanswered[item[0]] = item
            yield item

    overlay = render.VideoWriter(args.out, source.fps or 25.0) if args.out else None
    heat = render.VideoWriter(args.heatmap_out, source.fps or 25.0) if args.heatmap_out else None
    lines = open(args.jsonl, "w", buffering=1) if args.jsonl else None  # line-buffered: tail -f works
    total = min(limit, source.frame_count) if limit and source.frame_count else (limit or source.frame_count)
    bar = _Progress(total, progress and sys.stderr.isatty())
    results = []
    reconnects = 0
    # Ctrl-C finishes the frame in hand (its JSON line, overlay and heatmap
    # frames together), then stops; a second Ctrl-C interrupts at once.
    interrupted = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        def on_interrupt(*_):
            interrupted.set()
            signal.signal(signal.SIGINT, previous)

        previous = signal.getsignal(signal.SIGINT) or signal.default_int_handler
        signal.signal(signal.SIGINT, on_interrupt)
    try:
        with _client(args) as client:
            while True:
                stream = client.stream(frames(), realtime=realtime, maps="float16" if heat else None,
                                       window=args.window, **_match_settings(args))
                try:
                    for result in stream:
                        if broken:
                            raise broken[0]
                        item = unanswered.pop(result.sequence, None)
                        for skipped in result.skipped:
                            unanswered.pop(skipped, None)
                        _record(result, None if item is None else item[2], args, results, lines, overlay, heat)
                        bar.update(len(result.skipped))
                        if interrupted.is_set():
                            break
                    if broken:
                        raise broken[0]
                    break
                except FeatureMapError as error:
                    if broken:
                        raise broken[0] from None
                    if error.code not in _retryable() or reconnects >= _RECONNECTS:
                        raise
                    reconnects += 1
                    sys.stderr.write(f"\nfeaturemap watch: stream lost ({error.code.name}); resuming from frame "
                                     f"{min(unanswered, default='next')} on another replica\n")
                    time.sleep(0.2)
    except FeatureMapError as error:
        raise CommandError(f"featuremap watch: {error}") from None
    except SourceError as error:
        raise CommandError(str(error)) from None
    except KeyboardInterrupt:
        pass  # stop cleanly: what was written is kept
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        bar.finish()
        with read_lock:
            closed.append(True)
            source.close()
        for writer in (overlay, heat):
            if writer is not None:
                writer.close()
        if lines:
            lines.close()
    return {"frames": len(results), "skipped": sum(len(r["skipped"]) for r in results), "fps": bar.fps(),
            "results": results}


def _retryable():
    import grpc

    return {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL,
            grpc.StatusCode.UNKNOWN}


def _watch(args) -> int:
    summary = watch(args, progress=True)
    sys.stderr.write(f"{summary['frames']} frames, {summary['fps']:.1f} fps, {summary['skipped']} skipped\n")
    return 0


def _demo(args) -> int:
    from featuremap.client.demo import run_demo

    return run_demo(args)

# -- the parser -----------------------------------------------------------


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=os.environ.get("FEATUREMAP_ADDRESS", "localhost:50051"),
                        help="server host:port (env FEATUREMAP_ADDRESS; default localhost:50051)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default 30)")
    parser.add_argument("--token", default=os.environ.get("FEATUREMAP_TOKEN"),
                        help="bearer token (env FEATUREMAP_TOKEN)")
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument("--ca-file", help="PEM CA bundle of the server's certificate (implies --tls)")
    parser.add_argument("--cert-file", help="client certificate, for mutual TLS (implies --tls)")
    parser.add_argument("--key-file", help="client key, for mutual TLS")


def _add_match_options(parser: argparse.ArgumentParser) -> None:
    from featuremap.wire import METHODS

    parser.add_argument("--template", action="append", metavar="ID", help="match this template (repeat; "
                        "default: the whole bank)")
    parser.add_argument("--method", choices=list(METHODS), default="ccoeff_normed")
    parser.add_argument("--top-k", type=int, default=1, help="peaks per template (default 1)")
    parser.add_argument("--threshold", type=float, help="keep peaks scoring at least this (at most, for sqdiff)")


_SERVER_COMMANDS = ("serve", "warmup")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="featuremap", description="Streaming template matching.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    # Listed for --help; main() hands them to the server's command before parsing.
    commands.add_parser("serve", help="run the gRPC server (the same as featuremap-server serve)", add_help=False)
    commands.add_parser("warmup", help="compile every kernel into the cache (featuremap-server warmup)",
                        add_help=False)

    templates = commands.add_parser("templates", help="manage the template bank")
    actions = templates.add_subparsers(dest="action", required=True, parser_class=_Parser)
    add = actions.add_parser("add", help="add a template from an image or a video frame")
    add.add_argument("image", nargs="?", help="image file")
    add.add_argument("--id", help="template id (default: generated)")
    add.add_argument("--name", help="display name")
    add.add_argument("--label", action="append", metavar="KEY=VALUE", help="a label (repeat)")
    add.add_argument("--mask", help="mask image (non-zero counts)")
    add.add_argument("--from-video", metavar="VIDEO", help="cut the template from a frame of this video")
    add.add_argument("--frame", type=int, help="with --from-video: the frame index")
    add.add_argument("--roi", help="with --from-video: x,y,w,h")
    add.add_argument("--scales", help="also look for it at these scales, e.g. 0.5,1,2")
    add.add_argument("--angles", help="also look for it rotated by these degrees, e.g. -30,0,30")
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

    match = commands.add_parser("match", help="match one image; print the peaks as JSON")
    match.add_argument("image")
    _add_match_options(match)
    match.add_argument("--heatmap", metavar="OUT.png", help="write the first template's map over the image")
    match.add_argument("--overlay", metavar="OUT.png", help="write the image with the peaks drawn")
    _add_client_options(match)
    match.set_defaults(run=_match)

    watch_ = commands.add_parser("watch", help="stream a video, camera or RTSP source through the server")
    watch_.add_argument("source", help="video file, camera index, rtsp:// or http:// URL, image, folder or glob")
    _add_match_options(watch_)
    watch_.add_argument("--out", metavar="OVERLAY.mp4", help="write the frames with the peaks drawn")
    watch_.add_argument("--heatmap-out", metavar="HEAT.mp4", help="write the first template's map over the frames")
    watch_.add_argument("--jsonl", metavar="FILE", help="write one JSON line per answered frame")
    watch_.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=None,
                        help="skip stale frames (default: on for cameras and streams, off for files)")
    watch_.add_argument("--max-frames", type=int, help="stop after this many frames")
    watch_.add_argument("--window", type=int, default=4, help="frames in flight (default 4)")
    _add_client_options(watch_)
    watch_.set_defaults(run=_watch)

    demo = commands.add_parser("demo", help="the main job on embedded defaults: video in, detections out")
    demo.add_argument("--out-dir", default="demo-out", help="where the outputs go (default demo-out)")
    demo.add_argument("--frames", type=int, default=90, help="frames of the sample video (default 90)")
    _add_client_options(demo)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``featuremap`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in _SERVER_COMMANDS:
        return _server_command(argv)
    args = build_parser().parse_args(argv)
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
    sys.exit(main())

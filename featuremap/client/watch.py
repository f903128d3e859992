"""``featuremap watch``: a video, camera or stream through the server, as detections.

A source is read (live ones on a thread of their own that keeps only the
newest frame), streamed to the server, and each answer becomes detections
with track ids, one JSON line, an overlay frame and a heatmap frame. What
only the client sees is reported beside what the server reports: frames
dropped at the source, the age of each result, the source lost and
reconnected.
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import grpc
import numpy as np

from featuremap.wire import LOWER_IS_BETTER

from . import render
from .client import FeatureMapClient, FeatureMapError, FrameResult, MatchSettings
from .errors import no_server, nothing_listens
from .fitting import left_out_line, matchable
from .tracking import Tracker
from .video import Source, SourceError, SourceEvent, open_source

#: Stream failures worth resuming on another replica, and how often in a row.
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL,
                        grpc.StatusCode.UNKNOWN})
STREAM_RETRIES = 5
#: Seconds between progress lines when stderr is not a terminal (docker logs, CI).
LOG_EVERY = 5.0


class WatchError(Exception):
    """The watch could not go on (the source or the server failed); ``summary`` holds what was done."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


class NoTemplates(Exception):
    """No template asked for can be matched against the source's frames (each is named, with why)."""


def _first_frame(source: Source, settings: MatchSettings,
                 client: FeatureMapClient) -> tuple[Iterator[tuple[int, float, np.ndarray]], MatchSettings]:
    """The source's frames with the first one read (and put back in front), and the settings with the
    templates its frames can be matched with: those that cannot are named on stderr, in one line.

    Raises
    ------
    NoTemplates
        Not one template asked for (or of the bank) can be matched.
    """
    reader = iter(source)
    first = next(reader, None)
    if first is None:
        return reader, settings
    wanted = settings.get("templates")
    keep, left_out = matchable(client, [wanted] if isinstance(wanted, str) else wanted, *first[2].shape[:2])
    if left_out:
        line = left_out_line("watch", source.spec, left_out)
        if not keep:
            raise NoTemplates(line.replace(", left out:", ":") + "; nothing left to match")
        sys.stderr.write(line + "\n")
    return itertools.chain([first], reader), {**settings, "templates": keep}


def peaks_json(peaks: list[Any], tracks: list[int] | None = None) -> list[dict[str, Any]]:
    """Peaks as JSON objects (with their track ids when given)."""
    rows = []
    for index, p in enumerate(peaks):
        row = {"template": p.template, "x": round(p.x, 2), "y": round(p.y, 2), "width": p.width,
               "height": p.height, "score": round(p.score, 5), "scale": round(p.scale, 6),
               "angle": round(p.angle, 6), "cx": round(p.cx, 3), "cy": round(p.cy, 3),
               "visible": round(p.visible, 4), "ambiguity": round(p.ambiguity, 4)}
        if tracks is not None:
            row["track"] = tracks[index]
        rows.append(row)
    return rows


@dataclass
class Progress:
    """Progress on stderr: a self-overwriting line on a terminal, a line every few seconds elsewhere.

    Files show frames, percent, fps and ETA; live sources fps, frames dropped
    at the source, frames the server skipped, and the latest result's age.
    """

    total: int | None
    live: bool
    tty: bool
    enabled: bool = True
    frames: int = 0
    skipped: int = 0
    dropped: int = 0
    ages: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    _shown: float = 0.0

    def update(self, skipped: int, dropped: int, age: float | None) -> None:
        self.frames += 1
        self.skipped += skipped
        self.dropped = dropped
        if age is not None:
            self.ages.append(age)
        now = time.perf_counter()
        if self.enabled and now - self._shown >= (0.2 if self.tty else LOG_EVERY):
            self._shown = now
            self._show()

    def fps(self) -> float:
        return self.frames / max(1e-9, time.perf_counter() - self.started)

    def line(self) -> str:
        if self.live:
            age = f"  age {self.ages[-1] * 1e3:.0f} ms" if self.ages else ""
            return (f"frames {self.frames}  {self.fps():5.1f} fps  dropped at source {self.dropped}  "
                    f"skipped by server {self.skipped}{age}")
        done = f"{self.frames}/{self.total} ({100 * self.frames / self.total:.0f}%)" if self.total else f"{self.frames}"
        eta = ""
        if self.total and self.frames:
            eta = f"  ETA {max(0.0, (self.total - self.frames) / max(self.fps(), 1e-9)):.0f} s"
        return f"frames {done}  {self.fps():5.1f} fps  skipped {self.skipped}{eta}"

    def _show(self) -> None:
        if self.tty:
            sys.stderr.write(f"\r{self.line()}   ")
        else:
            sys.stderr.write(f"featuremap watch: {self.line()}\n")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled and self.tty and self.frames:
            self._show()
            sys.stderr.write("\n")


class _Outputs:
    """The files a watch writes: JSON lines, overlay video, heatmap video."""

    def __init__(self, args: argparse.Namespace, fps: float | None) -> None:
        # --fps wins; else the source's own rate (kept); images and folders have none: 25.
        fps = getattr(args, "fps", None) or fps or 25.0
        self.overlay = render.VideoWriter(args.out, fps) if args.out else None
        self.heat = render.VideoWriter(args.heatmap_out, fps) if args.heatmap_out else None
        self.lines: IO[str] | None = open(args.jsonl, "w", buffering=1) if args.jsonl else None  # tail -f works
        self.palette = render.Palette()

    def line(self, entry: dict[str, Any]) -> None:
        if self.lines is not None:
            self.lines.write(json.dumps(entry) + "\n")

    def close(self) -> None:
        for writer in (self.overlay, self.heat):
            if writer is not None:
                writer.close()
        if self.lines is not None:
            self.lines.close()


def _events(source: Source, outputs: _Outputs, log: list[dict[str, Any]]) -> None:
    """What happened to the source since last asked: to stderr and the JSON lines."""
    for event in source.events():
        entry = _event_json(event)
        log.append(entry)
        outputs.line(entry)
        sys.stderr.write(f"\nfeaturemap watch: {event.kind}: {event.detail}\n")


def _event_json(event: SourceEvent) -> dict[str, Any]:
    return {"event": event.kind, "time": round(event.time, 3), "detail": event.detail}


def watch(args: argparse.Namespace, settings: MatchSettings, *, client: FeatureMapClient,
          progress: bool = True) -> dict[str, Any]:
    """Stream ``args.source`` through the server; write what was asked; return a summary.

    Raises
    ------
    SourceError
        The source cannot be opened.
    WatchError
        The source was lost for good, or the server failed (``summary`` holds what was done).
    NoTemplates
        No template asked for can be matched against the source's frames.
    """
    source = open_source(args.source, timeout=args.source_timeout, max_reconnects=args.max_reconnects)
    try:
        reader, settings = _first_frame(source, settings, client)
    except BaseException:
        source.close()
        raise
    return _Watch(args, settings, client, source, reader, progress).run()


def _catch_interrupt(interrupted: threading.Event) -> Any:
    """Make the first Ctrl-C set ``interrupted`` (the frame in hand is finished: its JSON line, overlay
    and heatmap frames together), and the second interrupt at once; the handler it replaced, to put
    back (None off the main thread, where signals cannot be caught)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGINT) or signal.default_int_handler

    def on_interrupt(*_: object) -> None:
        interrupted.set()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, on_interrupt)
    return previous


class _Watch:
    """One watch: its source, its outputs and what it has seen, across the streams that serve it.

    A stream lost to a retryable failure is followed by another that resends
    the frames sent but not yet answered, so every frame gets a result.
    """

    def __init__(self, args: argparse.Namespace, settings: MatchSettings, client: FeatureMapClient,
                 source: Source, reader: Iterator[tuple[int, float, np.ndarray]], progress: bool) -> None:
        self.args, self.settings, self.client, self.source, self.reader = args, settings, client, source, reader
        self.realtime = source.live if args.realtime is None else args.realtime
        self.limit = args.max_frames
        # Frames sent but not yet answered: resent on another replica when the
        # one serving the stream goes away, so every frame gets a result.
        self.unanswered: dict[int, tuple[int, float, np.ndarray]] = {}
        self.read_lock = threading.Lock()
        self.closed = False  # set (under read_lock) once the source is released
        self.broken: list[SourceError] = []  # a source error met by gRPC's sender thread, raised here
        self.outputs = _Outputs(args, source.fps)
        limit, count = self.limit, source.frame_count
        total = min(limit, count) if limit and count else (limit or count)
        self.bar = Progress(total, source.live, sys.stderr.isatty(), enabled=progress)
        self.tracker = Tracker()
        self.method = settings.get("method", "ccoeff_normed")
        self.events: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []
        self.retries, self.lost_at = 0, -1  # tries since the last loss; the results answered when it was said
        self.interrupted = threading.Event()

    def frames(self) -> Iterator[tuple[int, float, np.ndarray]]:
        """The frames of one stream: those unanswered by the last one, then the source's."""
        yield from list(self.unanswered.values())
        while True:
            # gRPC's sender thread pulls frames; the lock keeps an abandoned
            # stream's sender and a new one apart, and both away from a
            # source that is being released.
            with self.read_lock:
                if self.closed or self.broken:
                    return
                try:
                    item = next(self.reader, None)
                except SourceError as error:
                    self.broken.append(error)
                    return
                if item is None or (self.limit is not None and item[0] >= self.limit):
                    return
                self.unanswered[item[0]] = item
            yield item

    def summary(self) -> dict[str, Any]:
        """What was done so far."""
        bar = self.bar
        return {"frames": bar.frames, "skipped": bar.skipped, "dropped": self.source.dropped, "fps": bar.fps(),
                "age_ms": statistics.median(bar.ages) * 1e3 if bar.ages else None, "events": self.events,
                "results": self.results, "interrupted": self.interrupted.is_set()}

    def record(self, result: FrameResult, item: tuple[int, float, np.ndarray] | None) -> None:
        """One answered frame: its detections tracked, its JSON line, overlay and heatmap frames, progress."""
        source, outputs = self.source, self.outputs
        _events(source, outputs, self.events)
        detections = self.tracker.update(result.peaks, self.method in LOWER_IS_BETTER)
        tracks = [d.track for d in detections]
        entry: dict[str, Any] = {"source": source.name_of(result.sequence), "sequence": result.sequence,
                                 "timestamp": result.timestamp, "peaks": peaks_json(result.peaks, tracks),
                                 "skipped": result.skipped}
        age = None
        if source.live and result.timestamp is not None:
            age = time.time() - result.timestamp
            entry.update(age_ms=round(age * 1e3, 1), dropped=source.dropped)
        self.results.append(entry)
        outputs.line(entry)
        frame = None if item is None else item[2]
        if outputs.overlay is not None and frame is not None:
            outputs.overlay.write(render.draw_peaks(frame, result.peaks, tracks=tracks, palette=outputs.palette))
        heat = render.result_heatmap(frame, result, self.method) \
            if outputs.heat is not None and frame is not None else None
        if outputs.heat is not None and heat is not None:
            outputs.heat.write(heat)
        self.bar.update(len(result.skipped), source.dropped, age)

    def run(self) -> dict[str, Any]:
        """Stream until the source ends, is lost, the server fails for good or Ctrl-C; the summary."""
        previous = _catch_interrupt(self.interrupted)
        try:
            while not self.stream():
                pass
            _events(self.source, self.outputs, self.events)
            if self.broken:
                raise WatchError(str(self.broken[0]), self.summary())
        except KeyboardInterrupt:
            self.interrupted.set()  # a second Ctrl-C: stop at once, keep what was written
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            self.bar.finish()
            with self.read_lock:
                self.closed = True
                self.source.close()
            self.outputs.close()
        return self.summary()

    def stream(self) -> bool:
        """One stream of the watch; whether the watch is over (False: resume with another)."""
        stream_settings: MatchSettings = {**self.settings, "realtime": self.realtime,
                                          "maps": "float16" if self.outputs.heat else None}
        stream = self.client.stream(self.frames(), window=self.args.window, **stream_settings)
        try:
            for result in stream:
                item = self.unanswered.pop(result.sequence, None)
                for skipped in result.skipped:
                    self.unanswered.pop(skipped, None)
                self.record(result, item)
                if self.broken or self.interrupted.is_set():
                    break
            return True
        except FeatureMapError as error:
            return bool(self.broken) or self.resume(error)

    def resume(self, error: FeatureMapError) -> bool:
        """After a stream failed: False to resume with another stream, or WatchError where that makes no sense."""
        address = getattr(self.args, "address", None) or "the server"
        # Resuming makes sense once a server was seen (it may come back, or a replica take
        # over) or where the address names several; a single address that never answered
        # is a server not running: say so once, and what to do.
        several = "," in address or address.startswith("dns:")
        if nothing_listens(error) and not self.results and not several:
            raise WatchError(f"featuremap watch: {no_server(address)}", self.summary()) from None
        if error.code == grpc.StatusCode.DEADLINE_EXCEEDED and "stream_idle_seconds" in str(error):
            # The server ended a stream that sent nothing for a while (a live source
            # reconnecting, say): a new stream takes the frames that come next.
            return False
        if error.code not in _RETRYABLE or self.retries >= STREAM_RETRIES:
            what = no_server(address) if nothing_listens(error) else str(error)
            raise WatchError(f"featuremap watch: {what}", self.summary()) from None
        # One line per loss: the tries after it, until a frame is answered again, are no news
        # (and a loss after answers again is a new one, with tries of its own).
        if self.lost_at != len(self.results):
            self.lost_at, self.retries = len(self.results), 0
            where = "on another replica" if several else "when the server answers again"
            sys.stderr.write(f"{chr(10) if self.bar.tty else ''}featuremap watch: stream lost "
                             f"({error.code.name}); resuming from frame {min(self.unanswered, default='next')} "
                             f"{where}\n")
        self.retries += 1
        time.sleep(0.2)
        return False




def summary_line(summary: dict[str, Any]) -> str:
    """The one-line account of a watch, for stderr."""
    age = f", result age {summary['age_ms']:.0f} ms (median)" if summary.get("age_ms") is not None else ""
    return (f"{summary['frames']} frames, {summary['fps']:.1f} fps, {summary['dropped']} dropped at the source, "
            f"{summary['skipped']} skipped by the server{age}")

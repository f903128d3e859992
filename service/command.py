"""The server's command: ``featuremap-server`` (or ``python -m featuremap.service``).

``featuremap-server serve`` runs the gRPC server until SIGTERM or SIGINT,
then drains; ``featuremap-server warmup`` compiles every kernel into the
cache (container builds). Exit codes: 0 ok, 1 usage error (bad flags or
settings), 2 the server could not start.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import threading
import time

USAGE, FAILURE = 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors exit 1, not argparse's 2
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"{self.prog}: error: {message}\n")


def seed_kernel_cache() -> None:
    """Copy kernels compiled at image build time into the (empty, writable) cache volume.

    Numba only uses a cache directory it can write to; a container's is a
    fresh volume, so the image carries its compiled kernels in
    FEATUREMAP_KERNEL_CACHE_SEED and each start copies them over.
    """
    seed, target = os.environ.get("FEATUREMAP_KERNEL_CACHE_SEED"), os.environ.get("NUMBA_CACHE_DIR")
    if seed and target and os.path.isdir(seed):
        shutil.copytree(seed, target, dirs_exist_ok=True)


def warmup_command(args: argparse.Namespace) -> int:
    """Compile every kernel (or load it from the cache) and say where the cache is."""
    from .engine import warmup

    started = time.perf_counter()
    warmup()
    print(f"kernels compiled and cached in {time.perf_counter() - started:.1f} s "
          f"({os.environ.get('NUMBA_CACHE_DIR') or 'beside the sources'})")
    return 0


def serve_command(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT, then drain within the grace period."""
    # Idle OpenMP threads sleep instead of spinning: between frames the
    # server's own threads (gRPC, decoding, encoding) need those cores. Must
    # be set before the first parallel kernel loads the OpenMP runtime.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    seed_kernel_cache()
    from . import logs
    from .cgroup import available_cpus
    from .config import SettingsError, settings_from

    try:
        settings = settings_from(args)
    except SettingsError as error:
        print(f"{args.prog}: {error}", file=sys.stderr)
        return USAGE
    # Numba sizes its thread pool when it loads: by the container's CPUs, not the host's.
    os.environ.setdefault("NUMBA_NUM_THREADS", str(settings.cpus or available_cpus()))
    logs.configure(settings.log_format, settings.log_level)
    log = logging.getLogger("featuremap.serve")
    from .server import create_server  # loads Numba
    try:
        server, port = create_server(settings.address, settings)
    except (OSError, RuntimeError) as error:
        print(f"{args.prog}: cannot start: {error}", file=sys.stderr)
        return FAILURE
    log.info("listening", extra={"address": settings.address, "port": port, "data_dir": settings.data_dir,
                                 "metrics_address": settings.metrics_address or "off"})
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("draining", extra={"grace_seconds": settings.grace_seconds})
    server.drain(settings.grace_seconds)
    log.info("stopped")
    return 0


def build_parser(prog: str = "featuremap-server") -> argparse.ArgumentParser:
    """The server command's parser: ``serve`` (with every setting as a flag) and ``warmup``."""
    from .config import add_arguments

    parser = _Parser(prog=prog, description="The featuremap gRPC server.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = commands.add_parser("serve", help="run the gRPC server",
                                description="Run the featuremap gRPC server. Every flag is also a FEATUREMAP_* "
                                            "environment variable; flags win.")
    add_arguments(serve)
    serve.set_defaults(run=serve_command, prog=f"{prog} serve")
    warm = commands.add_parser("warmup", help="compile every kernel into the cache (for container builds)")
    warm.set_defaults(run=warmup_command, prog=f"{prog} warmup")
    return parser


def main(argv: list[str] | None = None, prog: str = "featuremap-server") -> int:
    """Entry point of ``featuremap-server`` and of ``featuremap serve|warmup``."""
    args = build_parser(prog).parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130

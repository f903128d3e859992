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


def seed_kernel_cache() -> str | None:
    """Copy kernels compiled at image build time into the (writable) cache volume; never fail the start.

    Numba only uses a cache directory it can write to; a container's is a
    fresh volume, so the image carries its compiled kernels in
    FEATUREMAP_KERNEL_CACHE_SEED, one folder per x86-64 level
    (:mod:`featuremap.service.edge.cpu_level`; a seed without them is one folder of
    kernels for the build machine's CPU). The best level this CPU supports is
    chosen here, before Numba loads, and its kernels copied over. Only file
    contents are copied (never modes or owners: the volume's folder may belong
    to another user); what cannot be copied is said in one line and compiles
    at start instead (health NOT_SERVING meanwhile).

    Returns the level chosen (None: this CPU's own kernels).
    """
    from . import cpu_level

    seed, target = os.environ.get("FEATUREMAP_KERNEL_CACHE_SEED"), os.environ.get("NUMBA_CACHE_DIR")
    if not seed or not os.path.isdir(seed):
        return None
    level = cpu_level.apply(seed)
    if level is not None:
        seed = os.path.join(seed, level)
    elif any(os.path.isdir(os.path.join(seed, name)) for name, _ in cpu_level.LEVELS):
        # Levels carried, none this CPU runs (or NUMBA_CPU_NAME chosen by the user): compile.
        print(f"featuremap-server: no warm kernels in {seed} for this CPU; compiling them at start",
              file=sys.stderr)
        return None
    if target:
        copied, failed, first = _copy_contents(seed, target)
        if failed:
            print(f"featuremap-server: could not copy {failed} of {copied + failed} warm kernels into {target} "
                  f"({first}); those compile at start", file=sys.stderr)
    return level


def _copy_contents(source: str, target: str) -> tuple[int, int, str]:
    """Copy every file of ``source`` into ``target`` (contents only); (copied, failed, first failure)."""
    copied = failed = 0
    first = ""
    for folder, _, files in os.walk(source):
        into = os.path.join(target, os.path.relpath(folder, source))
        for name in files:
            try:
                os.makedirs(into, exist_ok=True)
                shutil.copyfile(os.path.join(folder, name), os.path.join(into, name))
                copied += 1
            except OSError as error:
                failed += 1
                first = first or f"{error.strerror or error}: {error.filename or into}"
    return copied, failed, first


def warmup_command(args: argparse.Namespace) -> int:
    """Compile every kernel (or load it from the cache) and say where the cache is.

    With ``--levels DIR``: once per x86-64 level this machine runs, each into DIR/<level>
    (an image's build; the server picks the best level its CPU supports).
    """
    if args.levels:
        return _warm_levels(args.levels)
    print("compiling every kernel for this CPU (the first time: about a minute; then they load from "
          f"{os.environ.get('NUMBA_CACHE_DIR') or 'the cache beside the sources'} in seconds)...", flush=True)
    from ..engine import warmup

    started = time.perf_counter()
    warmup()
    print(f"kernels compiled and cached in {time.perf_counter() - started:.1f} s "
          f"({os.environ.get('NUMBA_CACHE_DIR') or 'beside the sources'})")
    return 0


def _warm_levels(root: str) -> int:
    import subprocess

    from . import cpu_level

    levels = cpu_level.supported_levels(cpu_level.cpu_flags())
    wanted = os.environ.get("FEATUREMAP_WARM_LEVELS")  # e.g. "x86-64-v3": fewer levels, a faster build
    if wanted:
        levels = [level for level in levels if level in wanted.split(",")]
    if not levels:
        print("this machine runs none of the x86-64 levels: warming for its own CPU", file=sys.stderr)
        env = dict(os.environ, NUMBA_CACHE_DIR=root)
        return subprocess.call([sys.executable, "-m", "featuremap.service", "warmup"], env=env)
    skipped = [name for name, _ in cpu_level.LEVELS if name not in levels]
    if skipped:
        print(f"this machine cannot run {', '.join(skipped)}: no warm kernels for it (a CPU of that level "
              f"uses the best level below it)", file=sys.stderr)
    for level in levels:
        env = dict(os.environ, NUMBA_CPU_NAME=level, NUMBA_CPU_FEATURES="",
                   NUMBA_CACHE_DIR=os.path.join(root, level))
        print(f"{level}: ", end="", flush=True)
        code = subprocess.call([sys.executable, "-m", "featuremap.service", "warmup"], env=env)
        if code:
            return code
    return 0


def serve_command(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT, then drain within the grace period."""
    # Idle OpenMP threads sleep instead of spinning: between frames the
    # server's own threads (gRPC, decoding, encoding) need those cores. Must
    # be set before the first parallel kernel loads the OpenMP runtime.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    level = seed_kernel_cache()
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
                                 "metrics_address": settings.metrics_address or "off",
                                 "http_port": server.http_port or "off",
                                 "kernels_for": level or os.environ.get("NUMBA_CPU_NAME") or "this CPU"})
    log.info("warming up: health NOT_SERVING until every kernel is compiled or loaded (compiling, the first "
             "run on a machine: about a minute; `featuremap-server warmup` does it ahead, e.g. in an image)")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("draining", extra={"grace_seconds": settings.grace_seconds})
    finished = server.drain(settings.grace_seconds)
    log.info("stopped", extra={"work_finished": finished})
    if not finished:
        # Work cancelled at the grace's end and not yet at its next check (a warm-up compiling, a
        # long kernel): the bank is closed and nothing else needs saving, so the process exits
        # now rather than when that thread would (Python joins its pool's threads at exit).
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
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
    warm.add_argument("--levels", metavar="DIR", default=None,
                      help="compile once per x86-64 level this machine runs (x86-64-v2, -v3, -v4), each "
                           "into DIR/<level>: the image's kernel seed (FEATUREMAP_KERNEL_CACHE_SEED)")
    warm.set_defaults(run=warmup_command, prog=f"{prog} warmup")
    return parser


def main(argv: list[str] | None = None, prog: str = "featuremap-server") -> int:
    """Entry point of ``featuremap-server`` and of ``featuremap serve|warmup``."""
    args = build_parser(prog).parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130

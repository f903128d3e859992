"""The ``featuremap`` command."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading


def _serve(args: argparse.Namespace) -> int:
    # Idle OpenMP threads sleep instead of spinning: between frames the
    # server's own threads (gRPC, decoding, encoding) need those cores. Must
    # be set before the first parallel kernel loads the OpenMP runtime.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from featuremap.service import logs
    from featuremap.service.config import SettingsError, settings_from
    from featuremap.service.server import create_server, drain

    try:
        settings = settings_from(args)
    except SettingsError as error:
        print(f"featuremap serve: {error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format, settings.log_level)
    log = logging.getLogger("featuremap.serve")
    try:
        server, port = create_server(settings.address, settings)
    except (OSError, RuntimeError) as error:
        log.error("cannot start", extra={"error": str(error)})
        return 1
    log.info("listening", extra={"address": settings.address, "port": port, "data_dir": settings.data_dir,
                                 "metrics_address": settings.metrics_address or "off"})
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("draining", extra={"grace_seconds": settings.grace_seconds})
    drain(server, settings.grace_seconds)
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``featuremap`` console script."""
    from featuremap.service.config import add_arguments

    parser = argparse.ArgumentParser(prog="featuremap", description="Streaming template matching.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gRPC server",
                                description="Run the featuremap gRPC server. Every flag is also a FEATUREMAP_* "
                                            "environment variable; flags win.")
    add_arguments(serve)
    serve.set_defaults(run=_serve)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

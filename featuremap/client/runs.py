"""What the ``featuremap`` command's subcommands share: the expected-failure error, the threshold
left to the method, a client from the flags (once the server answers), and a watch run (the demo
runs one too)."""

from __future__ import annotations

import argparse
import sys
import time

USAGE, FAILURE = 1, 2
#: Seconds a command waits for a server that compiles its kernels (a cold start takes about a minute).
READY_WITHIN = 600.0
#: Seconds between progress lines while it does, off a terminal (on one, the line rewrites itself each second).
READY_EVERY = 5.0
#: --threshold not given: the client applies the method's default threshold.
METHOD_DEFAULT = object()


class CommandError(Exception):
    """An expected failure: its message is the one line the user sees."""

    def __init__(self, message: str, code: int = FAILURE) -> None:
        super().__init__(message)
        self.code = code


def client_from(args: argparse.Namespace):
    """A client for the command's ``--address``, ``--timeout`` and security flags, once its server serves.

    Raises
    ------
    CommandError
        Nothing listens at the address ("no server at ...", said once, with
        what to do), or the server did not finish compiling its kernels
        within ``READY_WITHIN`` seconds.
    """
    from featuremap.client import FeatureMapClient

    client = FeatureMapClient(args.address, timeout=args.timeout, token=args.token, tls=args.tls,
                              ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file)
    try:
        # (The demo's own watch has no subcommand of its own: it is a watch.)
        wait_ready(client, f"featuremap {getattr(args, 'command', None) or 'watch'}", args.address)
    except BaseException:
        client.close()
        raise
    return client


def wait_ready(client, command: str, address: str) -> None:
    """Return once the server at ``address`` says SERVING; meanwhile (a server that compiles its kernels,
    the first run on a machine) say so, with the seconds waited, on stderr.

    A server without health checks, or one refused for another reason (TLS),
    is left to the command's own call to report.
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from featuremap.client.errors import error_of, no_server, nothing_listens

    # The client's own channel (its TLS and address list); health is open to every caller.
    stub = health_pb2_grpc.HealthStub(client._channel)
    started = shown = time.monotonic()
    tty, said = sys.stderr.isatty(), False
    while True:
        try:
            status = stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        except grpc.RpcError as failure:
            error = error_of(failure.code(), failure.details() or "")
            if nothing_listens(error):
                if said:
                    sys.stderr.write("\n" if tty else "")
                raise CommandError(f"{command}: {no_server(address)}") from None
            return
        waited = time.monotonic() - started
        if status == health_pb2.HealthCheckResponse.SERVING:
            if said:
                pad = "   " if tty else ""  # over the progress line's end
                sys.stderr.write(f"{chr(13) if tty else ''}{command}: kernels ready after {waited:.0f} s{pad}\n")
            return
        if not said:
            sys.stderr.write(f"{command}: the server at {address} is compiling kernels (first run only, about a "
                             "minute) — `featuremap warmup` does it ahead of time\n")
            said = True
        if waited > READY_WITHIN:
            raise CommandError(f"{command}: the server at {address} was not ready after {READY_WITHIN:.0f} s")
        if tty:
            sys.stderr.write(f"\r{command}: compiling kernels: {waited:.0f} s ")
        elif time.monotonic() - shown >= READY_EVERY:
            shown = time.monotonic()
            sys.stderr.write(f"{command}: compiling kernels: {waited:.0f} s\n")
        sys.stderr.flush()
        time.sleep(1.0)


def match_settings(args: argparse.Namespace) -> dict:
    """The match keyword arguments of the command's flags (those not given are left to the server)."""
    from featuremap.options import OPTIONS

    # Always a key (match and watch read it): None, the whole bank.
    settings: dict = {"templates": getattr(args, OPTIONS["templates"].flag.dest, None) or None}
    for option in OPTIONS.values():
        flag = option.flag
        if flag is None or option.name == "templates":
            continue
        value = getattr(args, flag.dest, None)  # a flag of the other command: not given
        # Not given: left out, for the client's default (the threshold: the method's, DEFAULT_THRESHOLDS).
        if value is not (METHOD_DEFAULT if flag.none else None):
            settings[option.name] = value
    return settings


def watch(args, *, progress: bool = True) -> dict:
    """``featuremap watch``: see :func:`featuremap.client.watch.watch`; failures become CommandError."""
    from featuremap.client.video import SourceError
    from featuremap.client.watch import NoTemplates, WatchError, summary_line
    from featuremap.client.watch import watch as run_watch

    try:
        with client_from(args) as client:
            return run_watch(args, match_settings(args), client=client, progress=progress)
    except (SourceError, NoTemplates) as error:
        raise CommandError(str(error)) from None
    except WatchError as error:
        sys.stderr.write(summary_line(error.summary) + "\n")
        raise CommandError(str(error)) from None

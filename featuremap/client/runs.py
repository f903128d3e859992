"""What the ``featuremap`` command's subcommands share: the expected-failure error, the threshold
left to the method, a client from the flags, and a watch run (the demo runs one too)."""

from __future__ import annotations

import argparse
import sys

USAGE, FAILURE = 1, 2
#: --threshold not given: the client applies the method's default threshold.
METHOD_DEFAULT = object()


class CommandError(Exception):
    """An expected failure: its message is the one line the user sees."""

    def __init__(self, message: str, code: int = FAILURE) -> None:
        super().__init__(message)
        self.code = code


def client_from(args: argparse.Namespace):
    """A client for the command's ``--address``, ``--timeout`` and security flags."""
    from featuremap.client import FeatureMapClient

    return FeatureMapClient(args.address, timeout=args.timeout, token=args.token, tls=args.tls,
                            ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file)


def match_settings(args: argparse.Namespace) -> dict:
    """The match keyword arguments of the command's flags (those not given are left to the server)."""
    settings = dict(templates=args.template or None, method=args.method, top_k=args.top_k)
    if args.threshold is not METHOD_DEFAULT:  # else the method's default (the client's DEFAULT_THRESHOLDS)
        settings["threshold"] = args.threshold
    for name in ("min_visible", "max_overlap", "candidates"):  # pose templates; not given: the server's default
        if getattr(args, name, None) is not None:
            settings[name] = getattr(args, name)
    return settings


def watch(args, *, progress: bool = True) -> dict:
    """``featuremap watch``: see :func:`featuremap.client.watch.watch`; failures become CommandError."""
    from featuremap.client.video import SourceError
    from featuremap.client.watch import WatchError, summary_line
    from featuremap.client.watch import watch as run_watch

    try:
        with client_from(args) as client:
            return run_watch(args, match_settings(args), client=client, progress=progress)
    except SourceError as error:
        raise CommandError(str(error)) from None
    except WatchError as error:
        sys.stderr.write(summary_line(error.summary) + "\n")
        raise CommandError(str(error)) from None

"""The ``featuremap`` command's flags: argparse types, each refusing a bad value with what a good one is,
and the match flags, added from featuremap.options' table."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from featuremap.options import OPTIONS, UNSET, MatchOption

from .runs import METHOD_DEFAULT


def whole(least: int):
    """An argparse type: a whole number of at least ``least``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} must be {least} or more")
        return value

    return parse


positive_int = whole(1)
count = whole(0)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0")
    return value


def number(low: float, high: float, *, open_low: bool):
    """An argparse type: a number above ``low`` (``open_low``) or from it, up to ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not ((value > low) if open_low else (value >= low)) or not value <= high:
            raise argparse.ArgumentTypeError(f"{text} must be {'above' if open_low else 'from'} {low:g} "
                                             f"and at most {high:g}")
        return value

    return parse


def threshold(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (or 'none')") from None


def address(text: str) -> str:
    """host:port, several comma-separated, or a dns:/// target; ports 1-65535."""
    if text.startswith(("dns:", "unix:", "ipv4:", "ipv6:")):
        return text
    for part in (p.strip() for p in text.split(",")):
        host, _, port = part.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise argparse.ArgumentTypeError(f"{part!r} is not host:port with a port from 1 to 65535")
    return text


def of_option(option: MatchOption) -> Callable[[str], object] | None:
    """The argparse type of a match option's flag, from its row of featuremap.options' table.

    Whole numbers and numbers take the row's range (``--top-k`` 1 or more,
    ``--min-visible`` above 0 and at most 1); a flag that takes ``none``
    is a number or ``none``; names and choices stay text.
    """
    if option.flag is not None and option.flag.none:
        return threshold
    if option.kind == "whole":
        return whole(int(option.low or 0))
    if option.kind == "number" and option.low is not None and option.high is not None:
        return number(option.low, option.high, open_low=option.open_low)
    return None


def add_match_flags(parser: argparse.ArgumentParser, command: str, *, only: tuple[str, ...] = (),
                    but: tuple[str, ...] = ()) -> None:
    """The match flags of ``command`` (``only`` these, ``but`` not these), from featuremap.options' table."""
    for option in OPTIONS.values():
        flag = option.flag
        if flag is None or command not in flag.commands or option.name in but or (only and option.name not in only):
            continue
        parser.add_argument(flag.name, **_flag_arguments(option))


def _flag_arguments(option: MatchOption) -> dict:
    """add_argument's keywords for a match option's flag."""
    flag = option.flag
    assert flag is not None
    if option.kind == "names":  # repeated: --template a --template b
        return dict(action="append", metavar=flag.metavar, help=flag.help)
    if option.kind == "choice":
        return dict(choices=list(option.choices or ()), default=option.default, help=flag.help)
    if option.kind == "bool":  # --realtime / --no-realtime; neither: the command decides (watch: by source)
        return dict(action=argparse.BooleanOptionalAction, default=None, help=flag.help)
    # Not given: the table's default, or None (the server's); where 'none' is a value, METHOD_DEFAULT.
    default = METHOD_DEFAULT if flag.none else (None if option.default is UNSET else option.default)
    return dict(type=of_option(option), default=default, metavar=flag.metavar, help=flag.help)

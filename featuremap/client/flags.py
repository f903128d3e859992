"""The ``featuremap`` command's argparse types: each refuses a bad value with what a good one is."""

from __future__ import annotations

import argparse


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

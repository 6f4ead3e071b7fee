"""Command-line entry points: ``cadenza`` and ``cadenzad``."""

from __future__ import annotations

import argparse


def positive_int(text: str, *, word: str = "whole number", too_small: str = "") -> int:
    """An argparse type: a whole number from 1 up; ``too_small`` is said of 0 and below
    (``{value}`` stands for it), the ``word`` of something that is no number."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {word}") from None
    if value < 1:
        message = too_small or "must be at least 1, not {value}"
        raise argparse.ArgumentTypeError(message.format(value=value))
    return value

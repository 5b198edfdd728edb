"""Argument types shared by the benchmark scripts: a bad value is one argparse error line."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer >= 1 (repeats, steps, batch sizes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value

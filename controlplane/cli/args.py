"""Argument types shared by the command-line tools."""

from __future__ import annotations

import argparse


def seconds(text: str) -> float:
    """A length of time: plain seconds (`0`, `90`, `0.5`) or a duration (`90s`, `5m`, `1h30m`)."""
    # Imported here: the documents package loads PyYAML, which a CLI start need not pay for.
    from controlplane.documents.durations import parse_duration

    try:
        if text.replace(".", "", 1).isdigit():
            return float(text)
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None

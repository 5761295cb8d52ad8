"""Consoles for the command line: as wide as the terminal, and wide enough for whole tables when the output
goes to a file, a pipe or a CI log, where rich's 80-column default would cut addresses and names short."""

from __future__ import annotations

from rich.console import Console

LOG_WIDTH = 200


def console(stderr: bool = False) -> Console:
    out = Console(stderr=stderr)
    if not out.is_terminal:
        out.width = LOG_WIDTH
    return out

"""Shared command-line conventions: help that shows every default, and ``--threads``.

Every ``aapt-world`` subcommand builds its parser with ``command_parser``; compute commands add
``--threads`` with ``add_threads`` and apply it with ``apply_threads`` before any torch work.
"""

from __future__ import annotations

import argparse
from typing import Any

THREADS_HELP = ("torch CPU threads (0: torch's default, all cores; 1 is often fastest for "
                "small worlds on a busy machine)")


def command_parser(prog: str, description: str | None = None, **kwargs: Any
                   ) -> argparse.ArgumentParser:
    """An ArgumentParser whose help lists each option's default."""
    return argparse.ArgumentParser(prog=prog, description=description,
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                   **kwargs)


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_threads(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                default: int = 0) -> None:
    parser.add_argument("--threads", type=non_negative_int, default=default, help=THREADS_HELP)


def add_dtype(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
              default: str = "fp32") -> None:
    from aapt_world.devices import DTYPES  # torch: imported only by commands that run models

    parser.add_argument("--dtype", choices=tuple(DTYPES), default=default,
                        help="the neural world's precision (bf16: ~2x faster on CPUs with AMX, "
                             "slower on others)")


def apply_threads(threads: int) -> None:
    """Set torch's CPU thread count (0 leaves it alone)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def comma_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (an empty string gives an empty list)."""
    return [item.strip() for item in text.split(",") if item.strip()]

"""Command-line pieces the simulators share."""

from __future__ import annotations

import argparse


def add_clock_argument(parser: argparse.ArgumentParser) -> None:
    """``--clock SPEC``: the clock every process of a scenario shares."""
    parser.add_argument(
        "--clock",
        default=None,
        metavar="SPEC",
        help="'real' or sim:<ISO start>@<real anchor>x<speed>, shared with the "
        "other processes of a scenario (default: $FUSEBOX_CLOCK, else real)",
    )

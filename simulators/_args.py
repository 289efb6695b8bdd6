"""Command-line pieces the simulators share."""

from __future__ import annotations

import argparse
import os
import time

from protocols.clock import CLOCK_ENV, Clock


def add_clock_argument(parser: argparse.ArgumentParser) -> None:
    """``--clock SPEC``: the clock every process of a scenario shares."""
    parser.add_argument(
        "--clock",
        default=None,
        metavar="SPEC",
        help="'real' or sim:<ISO start>@<real anchor>x<speed>, shared with the "
        "other processes of a scenario (default: $FUSEBOX_CLOCK, else real)",
    )


def clock_from_args(args: argparse.Namespace) -> Clock:
    """The clock of ``--clock``, else of ``$FUSEBOX_CLOCK``, else the real one.
    Raises ``ClockSpecError`` (its message shows the expected form)."""
    spec = getattr(args, "clock", None)
    return Clock.parse(
        spec if spec is not None else os.environ.get(CLOCK_ENV), real=time.time
    )

"""Bad input from a charger is logged once per state change, not once per frame.

A charger stuck resending a bad message must not fill a gateway's disk (issue 10:
44 tracebacks of ~30 lines in one short run). Per charger, ``BadInput`` logs one
WARNING line when the charger starts sending something bad or switches to a
different kind of bad, counts every bad frame by reason, and logs nothing more
until the charger sends a good frame again; the full detail (the frame, a
traceback) goes to DEBUG. ``LibraryLog`` is what the ``ocpp`` library gets as
its logger: the CallErrors it answers for a bad CALL go through ``BadInput``;
everything else passes through.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from typing import Any

from edge.ocpp import lib

log = logging.getLogger("fusebox.edge.ocpp")

__all__ = ["BadInput", "LibraryLog"]


class BadInput:
    """One charger's bad frames: counted by reason, logged on a change."""

    def __init__(self, charger_id: str) -> None:
        self.charger_id = charger_id
        self.counts: Counter[str] = Counter()
        self._failing: str | None = None
        self._quiet = 0  # bad frames not logged since the last line

    def bad(self, reason: str, detail: str, *, exc_info: bool = False) -> None:
        """One bad frame: WARNING if it starts a new kind of bad, else DEBUG."""
        self.counts[reason] += 1
        if reason != self._failing:
            more = f" ({self._quiet} more bad frames before)" if self._quiet else ""
            log.warning(
                "ocpp: charger %s sends bad input (%s): %.200s; answered and "
                "counted, logged again when it changes%s",
                self.charger_id,
                reason,
                detail,
                more,
            )
            self._failing, self._quiet = reason, 0
        else:
            self._quiet += 1
        log.debug(
            "ocpp: charger %s: %s: %s",
            self.charger_id,
            reason,
            detail,
            exc_info=exc_info,
        )

    def ok(self) -> None:
        """A good frame: the next bad one is news again."""
        if self._failing is not None:
            log.info(
                "ocpp: charger %s sends good frames again (%d bad frames not logged)",
                self.charger_id,
                self._quiet,
            )
            self._failing, self._quiet = None, 0


class LibraryLog:
    """The logger handed to the ``ocpp`` library for one charger.

    The library calls ``exception`` for every CALL it answers with a CallError
    (schema failures, unknown actions): those are the charger's bad input, not
    the edge's errors, and go to ``BadInput`` with their code as the reason. A
    handler that raised anything else is a bug of ours: its traceback is kept,
    once per kind, then counted like the rest."""

    def __init__(self, bad_input: BadInput, base: logging.Logger) -> None:
        self.bad_input = bad_input
        self._base = base
        self.refused_last = False  # the last CALL was answered with a CallError

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        exc = sys.exc_info()[1]
        self.refused_last = True
        text = msg % args if args else msg
        if isinstance(exc, lib.OCPPError):
            self.bad_input.bad(f"{exc.code}", f"{exc.description}; {text}")
            return
        reason = f"handler:{type(exc).__name__}"
        if self.bad_input.counts[reason] == 0:
            self._base.error("%s", text, exc_info=True)
        self.bad_input.bad(reason, text, exc_info=True)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._base.debug(msg, *args, **kwargs)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._base.info(msg, *args, **kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._base.warning(msg, *args, **kwargs)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._base.error(msg, *args, **kwargs)

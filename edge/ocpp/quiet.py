"""Bad input from a charger is logged once per state change, not once per frame.

A charger stuck resending a bad message must not fill a gateway's disk (issue 10:
44 tracebacks of ~30 lines in one short run). Per charger, ``BadInput`` logs one
WARNING line when the charger starts sending something bad or switches to a
different kind of bad, counts every bad frame by reason, and logs nothing more
until the charger sends a good frame again; the full detail (the frame, a
traceback) goes to DEBUG. ``LibraryLog`` is what the ``ocpp`` library gets as
its logger: the CallErrors it answers for a bad CALL go through ``BadInput``;
everything else passes through.

Sampled values are a second ledger on the same object (``BadInput.values``): a
message that had some skipped (unreadable) or tolerated (mended) was still
stored and answered, so it is no bad frame; the values are counted by reason
(``values_skipped``, ``values_tolerated``: the metrics
``fusebox_ocpp_values_skipped_total`` and ``..._tolerated_total``), and one line
is logged when a charger shows a kind it has not shown before (its state of
quirks changed), at most ``MAX_VALUE_KINDS`` kinds per charger; a charger
resending the same quirky values logs nothing more.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from edge.ocpp import lib
from edge.ocpp.auth import redact_secrets

log = logging.getLogger("fusebox.edge.ocpp")

__all__ = ["MAX_VALUE_KINDS", "BadInput", "LibraryLog"]

MAX_VALUE_KINDS = 32
"""Distinct kinds of skipped or tolerated sampled values logged per charger; the
ones after that are only counted (a charger cannot flood the log by varying a
unit's spelling)."""


class BadInput:
    """One charger's bad frames: counted by reason, logged on a change."""

    def __init__(self, charger_id: str) -> None:
        self.charger_id = charger_id
        self.counts: Counter[str] = Counter()
        self._failing: str | None = None
        self._quiet = 0  # bad frames not logged since the last line
        # sampled values skipped / tolerated, by reason; the kinds logged
        self.values_skipped: Counter[str] = Counter()
        self.values_tolerated: Counter[str] = Counter()
        self._value_kinds: set[tuple[str, str, str]] = set()

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

    def values(
        self,
        skipped: Sequence[tuple[str, str]],
        tolerated: Sequence[tuple[str, str]] = (),
    ) -> None:
        """One message's sampled values that were skipped or tolerated, as
        ``(reason, detail)``: counted; one line for kinds not seen before."""
        new: list[str] = []
        warn = False
        for outcome, findings, counts in (
            ("skipped", skipped, self.values_skipped),
            ("tolerated", tolerated, self.values_tolerated),
        ):
            for reason, detail in findings:
                counts[reason] += 1
                kind = (outcome, reason, detail)
                if kind in self._value_kinds:
                    continue
                if len(self._value_kinds) < MAX_VALUE_KINDS:
                    self._value_kinds.add(kind)
                    new.append(f"{outcome} {reason}: {detail}"[:120])
                    warn = warn or outcome == "skipped"
                elif len(self._value_kinds) == MAX_VALUE_KINDS:
                    self._value_kinds.add(("", "", ""))  # the cap, logged once
                    new.append(f"more than {MAX_VALUE_KINDS} kinds: only counted")
        if new:
            log.log(
                logging.WARNING if warn else logging.INFO,
                "ocpp: charger %s: sampled values %s (the rest of the message "
                "stored; counted, logged again for a new kind)",
                self.charger_id,
                "; ".join(new)[:600],
            )
        log.debug(
            "ocpp: charger %s: sampled values skipped %s, tolerated %s",
            self.charger_id,
            list(skipped),
            list(tolerated),
        )


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
        self._base.debug(msg, *_redacted(args), **kwargs)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        # the library logs every frame here, both ways: at DEBUG (a gateway's log
        # is not a frame trace; a charger resending a bad frame must not fill the
        # disk), and never with a charger's new password
        self._base.debug(msg, *_redacted(args), **kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._base.warning(msg, *args, **kwargs)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._base.error(msg, *args, **kwargs)


def _redacted(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Log arguments with any charger password in a frame redacted
    (``edge.ocpp.auth.redact_secrets``)."""
    return tuple(redact_secrets(a) if isinstance(a, str) else a for a in args)

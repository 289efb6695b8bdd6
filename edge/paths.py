"""The gateway's state files kept beside the outbox, named in one place.

Everything the edge keeps across restarts lives in the outbox's directory and is
named after the outbox file's stem, so one ``[outbox] path`` places all of it
and two edges with different outboxes in one directory keep apart. For
``var/outbox.db``::

    var/outbox.db                  the outbox itself (``edge.outbox``; its
                                   SQLite ``-wal`` and ``-reserve`` files are
                                   its own business)
    var/outbox-claim.txt           the claim code (``edge.claim``)
    var/outbox-overrides.json      the installer's changes (``edge.overrides``)
    var/outbox-ocpp.db             OCPP transactions (``edge.ocpp.transactions``)
    var/outbox-lease.msgpack       the last schedule lease (``edge.controller``)

These names are on disk at every installed gateway: changing one makes the
gateways forget that state at their next start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["StatePaths"]


@dataclass(frozen=True, slots=True)
class StatePaths:
    """Where each piece of the gateway's state is kept; build it with
    ``StatePaths.beside(config.outbox.path)``."""

    outbox: Path
    claim: Path
    overrides: Path
    ocpp_transactions: Path
    lease: Path

    @classmethod
    def beside(cls, outbox_path: Path) -> StatePaths:
        """The state files of the gateway whose outbox is ``outbox_path``."""

        def named(suffix: str) -> Path:
            """``<dir>/<outbox stem><suffix>``."""
            return outbox_path.with_name(outbox_path.stem + suffix)

        return cls(
            outbox=outbox_path,
            claim=named("-claim.txt"),
            overrides=named("-overrides.json"),
            ocpp_transactions=named("-ocpp.db"),
            lease=named("-lease.msgpack"),
        )

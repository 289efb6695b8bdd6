"""The installer's word on discovery beyond approving: forgetting a pending
charger (``POST /api/chargers/{id}/forget`` and the page's button).

A pending charger id is bound to the device of its first connection
(``edge.ocpp.pending``); when that is the wrong device (the page shows its
address, and the other devices refused under the id), the installer forgets the
id: its connection is closed and the next device to connect under it is bound
instead. For an approved charger whose new password still waits for its bound
device, forgetting drops the wait: the password must then be set on the charger
by hand. Nothing is persisted: pending chargers live in memory only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge.local_api._errors import NotFound

if TYPE_CHECKING:
    from edge.local_api._site import LocalSite

__all__ = ["forget_pending"]


def forget_pending(site: LocalSite, charger_id: str) -> dict[str, Any]:
    """Forget a pending charger (or the password waiting for an approved one);
    ``NotFound`` when there is neither."""
    if site.ocpp is None:
        raise NotFound(f"no charger {charger_id!r}: the OCPP server is off")
    kind = site.ocpp.forget_pending(charger_id)
    if kind is None:
        raise NotFound(
            f"no pending charger {charger_id!r} (and no password waiting for it)"
        )
    if kind == "pending":
        note = "forgotten: the next device to connect under this id is bound to it"
    else:
        note = (
            "the charger stays approved, but its password no longer waits for "
            "it: set the password on the charger itself"
        )
    return {"id": charger_id, "forgotten": kind, "note": note}

"""Discovery's pending chargers: which device each unknown charger id belongs to,
and how many ids one address and the whole gateway may hold.

Pure state, no I/O, the time passed in (like ``edge.uplink.SendPlan``). The
seams: ``edge.ocpp.handshake`` asks ``admit`` at the opening handshake of an
unknown charger id (before any OCPP is spoken) and ``admit_delivery`` for an
approved id whose password has not reached it yet; ``edge.ocpp.server`` reports
``connected`` / ``seen`` / ``disconnected`` for the connections it let in, and
carries out the installer's decisions with ``approved``, ``hold_delivery``,
``delivered`` and ``forget``; the installer's page and the metrics read
``chargers``, ``bindings``, ``deliveries`` and ``refused``.

**Binding.** A pending charger id belongs to the device of its *first*
connection: its TLS client certificate (SHA-256 fingerprint of the DER) when it
presented one, else its network address (the host, not the port). A later
connection under the id from another device is refused (HTTP 409) and kept as a
*conflict* that the installer sees, with its address. The installer's approval
(the charger's new password) goes to the bound device only: if it is offline,
the password waits (a *delivery*) until the same device reconnects. ``forget``
unbinds an id; its next connection is the first again.

**Bounds.** At most ``max_pending`` pending ids per gateway and
``max_per_address`` per source address; a new id beyond either is refused at the
handshake (429 for the address, 503 for the gateway). An id (or a waiting
delivery) with no connection for ``expire_after`` is dropped, freeing its place.

**Quiet.** Every refusal is counted by reason in ``refused``; ``Refuse.log``
asks for a log line only when an address's refusal *changes* (its first one, or
another reason or charger id), so a device retrying every second writes one
line, not one per attempt. An admitted connection from the address resets it.

Why no one-time pairing code: OCPP 1.6 and 2.0.1 give a pending charger no
field in which to present a code shown on the installer's page (the
BootNotification has none, and its first connection carries no credentials), so
the binding is to what the first connection brings: its certificate or address.
Its limit, documented for the installer: a device that connects *first* under a
new id owns it until the installer forgets it (the page shows the bound address
to compare with the charger's), and a device on the very same address cannot be
told apart without a client certificate.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http import HTTPStatus

from edge.ocpp.state import PendingCharger

__all__ = [
    "REFUSAL_REASONS",
    "Admit",
    "Binding",
    "Conflict",
    "Peer",
    "PendingRegistry",
    "Refuse",
    "Verdict",
]

REFUSAL_REASONS = (
    "bad_id",  # the charger id in the URL fails the pattern (400)
    "bad_request",  # not even a readable HTTP upgrade request
    "unknown",  # an unknown id with discovery off (404)
    "unauthorized",  # a known id without its Basic credentials (401)
    "conflict",  # a pending id from another device than its first (409)
    "address_full",  # max_per_address pending ids from this address (429)
    "gateway_full",  # max_pending pending ids on the gateway (503)
)
"""Why a handshake was refused: the labels of ``PendingRegistry.refused``."""

_UNAUTHORIZED = "missing or wrong Basic credentials"
_MAX_CONFLICTS = 8  # per id: the most recent other devices, for the installer
_MAX_LOG_ADDRESSES = 1024  # addresses whose refusal state is remembered


@dataclass(frozen=True, slots=True)
class Peer:
    """The device at the other end of one connection: its address (host only)
    and, when it presented a TLS client certificate, that certificate's SHA-256
    fingerprint (hex)."""

    address: str | None
    fingerprint: str | None = None

    def is_device_of(self, first: Peer) -> bool:
        """Whether this is the device ``first`` was: the same certificate when
        ``first`` had one, else the same address."""
        if first.fingerprint is not None:
            return self.fingerprint == first.fingerprint
        return self.address is not None and self.address == first.address

    @property
    def label(self) -> str:
        """How the installer's page names the device."""
        if self.fingerprint is not None:
            return (
                f"TLS certificate SHA-256 {self.fingerprint[:16]}... "
                f"(from {self.address or 'an unknown address'})"
            )
        return f"address {self.address or 'unknown'}"


@dataclass(slots=True)
class Conflict:
    """Another device that tried a pending id: when, and how often."""

    peer: Peer
    first_at: datetime
    last_at: datetime
    attempts: int = 1


@dataclass(slots=True)
class Binding:
    """Whom a pending id (or an approved one whose password waits) belongs to:
    the device of its first connection, that device's connection while it is
    open, and the other devices that tried the id."""

    peer: Peer
    last_seen: datetime
    connection: object | None = None
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def live(self) -> bool:
        """Whether the bound device is connected now."""
        return self.connection is not None

    def note_conflict(self, peer: Peer, now: datetime) -> None:
        """Keep ``peer``'s attempt (the most recent ``_MAX_CONFLICTS`` devices)."""
        for c in self.conflicts:
            if c.peer == peer:
                c.last_at, c.attempts = now, c.attempts + 1
                return
        self.conflicts.append(Conflict(peer, now, now))
        del self.conflicts[:-_MAX_CONFLICTS]


@dataclass(frozen=True, slots=True)
class Admit:
    """Let the connection in; ``new``: it created a pending id."""

    new: bool = False


@dataclass(frozen=True, slots=True)
class Refuse:
    """Refuse the handshake with HTTP ``status`` and the one-line ``message``
    (for the device); ``reason`` is the counter's label; ``log``: a log line is
    due (the address's refusal changed)."""

    status: int
    reason: str
    message: str
    log: bool


Verdict = Admit | Refuse


class PendingRegistry:
    """The pending charger ids, whom each belongs to, and the refusals."""

    def __init__(
        self,
        *,
        max_pending: int = 32,
        max_per_address: int = 4,
        expire_after: timedelta = timedelta(hours=24),
    ) -> None:
        self.max_pending = max_pending
        self.max_per_address = max_per_address
        self.expire_after = expire_after
        # what the installer sees of each pending id (``OcppServer.pending``)
        self.chargers: dict[str, PendingCharger] = {}
        self.bindings: dict[str, Binding] = {}
        # approved ids whose password waits for the bound device to reconnect
        self.deliveries: dict[str, Binding] = {}
        # the last delivery's answer per id ("Accepted", "Rejected", ...)
        self.delivery_results: dict[str, str] = {}
        self.refused: Counter[str] = Counter()
        # address -> the refusal last logged for it
        self._logged: OrderedDict[str, str] = OrderedDict()

    # -- at the handshake ----------------------------------------------------

    def admit(
        self,
        charger_id: str,
        peer: Peer,
        now: datetime,
        *,
        remote: str | None,
        version: str,
    ) -> Verdict:
        """An unknown ``charger_id`` asks to connect from ``peer``: its bound
        device is let in, another device refused (409, a conflict); a new id
        is bound to ``peer`` if the bounds allow (else 429 / 503)."""
        binding = self.bindings.get(charger_id)
        if binding is not None:
            if peer.is_device_of(binding.peer):
                self.admitted(peer)
                return Admit()
            return self._conflict(charger_id, binding, peer, now, HTTPStatus.CONFLICT)
        from_address = sum(
            1 for b in self.bindings.values() if b.peer.address == peer.address
        )
        if from_address >= self.max_per_address:
            return self.refusal(
                peer,
                "address_full",
                HTTPStatus.TOO_MANY_REQUESTS,
                f"too many charge points pending approval from this address "
                f"({self.max_per_address}); the installer must approve or forget "
                "some on the gateway's page",
            )
        if len(self.bindings) >= self.max_pending:
            return self.refusal(
                peer,
                "gateway_full",
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"too many charge points pending approval on this gateway "
                f"({self.max_pending}); the installer must approve or forget some "
                "on the gateway's page",
            )
        self.bindings[charger_id] = Binding(peer, now)
        self.chargers[charger_id] = PendingCharger(
            charger_id, now, now, remote, version
        )
        self.admitted(peer)
        return Admit(new=True)

    def admit_delivery(self, charger_id: str, peer: Peer, now: datetime) -> Verdict:
        """An approved id whose password waits connects without it: its bound
        device is let in (to be given the password); another device is refused
        (401, and kept as a conflict). ``unauthorized`` when nothing waits."""
        binding = self.deliveries.get(charger_id)
        if binding is None:
            return self.refusal(
                peer,
                "unauthorized",
                HTTPStatus.UNAUTHORIZED,
                _UNAUTHORIZED,
                key=f"unauthorized:{charger_id}",
            )
        if peer.is_device_of(binding.peer):
            self.admitted(peer)
            return Admit()
        # the device is told no more than any other without credentials
        return self._conflict(
            charger_id, binding, peer, now, HTTPStatus.UNAUTHORIZED, _UNAUTHORIZED
        )

    def _conflict(
        self,
        charger_id: str,
        binding: Binding,
        peer: Peer,
        now: datetime,
        status: HTTPStatus,
        message: str = (
            "this charge point identity is pending approval for another device; "
            "the installer can forget it on the gateway's page"
        ),
    ) -> Refuse:
        binding.note_conflict(peer, now)
        return self.refusal(
            peer, "conflict", status, message, key=f"conflict:{charger_id}"
        )

    def refusal(
        self,
        peer: Peer,
        reason: str,
        status: int,
        message: str,
        *,
        key: str | None = None,
    ) -> Refuse:
        """Count a refusal of ``peer`` for ``reason``; a log line is due when
        ``key`` (default: the reason) differs from the address's last one."""
        self.refused[reason] += 1
        address = peer.address or "?"
        key = key or reason
        due = self._logged.get(address) != key
        self._logged[address] = key
        self._logged.move_to_end(address)
        while len(self._logged) > _MAX_LOG_ADDRESSES:
            self._logged.popitem(last=False)
        return Refuse(int(status), reason, message, due)

    def admitted(self, peer: Peer) -> None:
        """A connection from ``peer`` was let in: its address's next refusal is
        news again."""
        self._logged.pop(peer.address or "?", None)

    # -- connections the server let in ---------------------------------------

    def _binding(self, charger_id: str) -> Binding | None:
        return self.bindings.get(charger_id) or self.deliveries.get(charger_id)

    def connected(
        self,
        charger_id: str,
        connection: object,
        now: datetime,
        *,
        remote: str | None,
        version: str,
    ) -> bool:
        """The bound device's connection is open; False when the id is no
        longer pending or waiting (forgotten or expired since its handshake)."""
        binding = self._binding(charger_id)
        if binding is None:
            return False
        binding.connection, binding.last_seen = connection, now
        held = self.chargers.get(charger_id)
        if held is not None:
            held.last_seen, held.remote, held.ocpp_version = now, remote, version
        return True

    def seen(self, charger_id: str, now: datetime) -> None:
        """The bound device sent a frame."""
        binding = self._binding(charger_id)
        if binding is not None:
            binding.last_seen = now
        held = self.chargers.get(charger_id)
        if held is not None:
            held.last_seen = now

    def disconnected(self, charger_id: str, connection: object, now: datetime) -> None:
        """``connection`` closed; the id's expiry counts from now."""
        binding = self._binding(charger_id)
        if binding is not None and binding.connection is connection:
            binding.connection, binding.last_seen = None, now

    def expire(self, now: datetime) -> list[str]:
        """Drop the ids (pending or waiting for their password) with no
        connection for ``expire_after``; the ids dropped."""
        gone = []
        for table in (self.bindings, self.deliveries):
            for charger_id, b in list(table.items()):
                if not b.live and now - b.last_seen >= self.expire_after:
                    del table[charger_id]
                    self.chargers.pop(charger_id, None)
                    gone.append(charger_id)
        return gone

    # -- the installer's decisions ------------------------------------------

    def approved(self, charger_id: str) -> Binding | None:
        """The installer approved a pending id: no longer pending; its binding
        (to give the password to, or hold it for) is returned."""
        self.chargers.pop(charger_id, None)
        return self.bindings.pop(charger_id, None)

    def hold_delivery(self, charger_id: str, binding: Binding) -> None:
        """The approved charger's password waits for its bound device."""
        self.deliveries[charger_id] = binding
        self.delivery_results.pop(charger_id, None)

    def delivered(self, charger_id: str, answer: str) -> None:
        """The bound device answered the password (``answer``), or the charger
        connected with it (set by hand): nothing waits any more."""
        self.deliveries.pop(charger_id, None)
        self.delivery_results[charger_id] = answer

    def forget(self, charger_id: str) -> Binding | None:
        """Unbind a pending id (or a waiting delivery): its next connection is
        the first again. The binding forgotten, None if there was none."""
        self.chargers.pop(charger_id, None)
        return self.bindings.pop(charger_id, None) or self.deliveries.pop(
            charger_id, None
        )

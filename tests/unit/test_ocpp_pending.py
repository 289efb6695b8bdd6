"""Discovery's pending-charger registry (``edge.ocpp.pending``, pure) and the
charger-id check of the handshake (``edge.ocpp.auth.charger_id_problem``).

The same paths run for real, over websockets, in
``tests/component/test_ocpp_discovery.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from edge.ocpp.auth import charger_id_problem, identity_from_path, redact_secrets
from edge.ocpp.config import CHARGE_POINT_ID_PATTERN, ChargerConfig
from edge.ocpp.pending import Admit, Peer, PendingRegistry, Refuse
from protocols.lease import ChargerId

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
A = Peer("10.0.0.5")
B = Peer("10.0.0.6")


def _admit(
    reg: PendingRegistry, cid: str, peer: Peer, now: datetime = T0
) -> Admit | Refuse:
    return reg.admit(cid, peer, now, remote=f"{peer.address}:5000", version="1.6")


# -- binding -------------------------------------------------------------------


def test_a_pending_id_belongs_to_the_device_of_its_first_connection() -> None:
    reg = PendingRegistry()
    assert _admit(reg, "NEW", A) == Admit(new=True)
    assert reg.chargers["NEW"].remote == "10.0.0.5:5000"
    assert _admit(reg, "NEW", A) == Admit(new=False)  # it reconnects
    rogue = _admit(reg, "NEW", B, T0 + timedelta(seconds=5))
    assert isinstance(rogue, Refuse)
    assert (rogue.status, rogue.reason, rogue.log) == (409, "conflict", True)
    assert "another device" in rogue.message and "10.0.0.5" not in rogue.message
    again = _admit(reg, "NEW", B, T0 + timedelta(seconds=9))
    assert isinstance(again, Refuse) and not again.log  # counted, not logged
    (conflict,) = reg.bindings["NEW"].conflicts
    assert conflict.peer == B and conflict.attempts == 2
    assert conflict.last_at == T0 + timedelta(seconds=9)
    assert reg.refused["conflict"] == 2
    assert reg.bindings["NEW"].peer == A


def test_a_client_certificate_binds_tighter_than_an_address() -> None:
    cert_a = Peer("10.0.0.5", "aa" * 32)
    cert_b = Peer("10.0.0.5", "bb" * 32)
    assert cert_a.is_device_of(cert_a)
    assert not cert_b.is_device_of(cert_a)  # same address, another certificate
    assert not Peer("10.0.0.5").is_device_of(cert_a)  # no certificate at all
    assert Peer("10.0.0.9", "aa" * 32).is_device_of(cert_a)  # it moved
    assert cert_a.is_device_of(A)  # bound by address: the address decides
    assert not Peer(None).is_device_of(Peer(None))
    assert "SHA-256 aaaaaaaa" in cert_a.label and A.label == "address 10.0.0.5"


def test_conflicts_kept_per_id_are_bounded() -> None:
    reg = PendingRegistry()
    _admit(reg, "NEW", A)
    for i in range(20):
        _admit(reg, "NEW", Peer(f"10.1.0.{i}"))
    kept = [c.peer.address for c in reg.bindings["NEW"].conflicts]
    assert kept == [f"10.1.0.{i}" for i in range(12, 20)]


# -- bounds and quiet refusals ------------------------------------------------


def test_pending_ids_are_bounded_per_address_and_per_gateway() -> None:
    reg = PendingRegistry(max_pending=6, max_per_address=2)
    verdicts = [_admit(reg, f"A{i}", A) for i in range(300)]
    assert [v for v in verdicts if isinstance(v, Admit)] == [Admit(True)] * 2
    refusals = [v for v in verdicts if isinstance(v, Refuse)]
    assert {(r.status, r.reason) for r in refusals} == {(429, "address_full")}
    assert sum(r.log for r in refusals) == 1  # one line for 298 refusals
    assert reg.refused["address_full"] == 298
    for n in range(1, 3):
        for i in range(2):
            assert _admit(reg, f"P{n}-{i}", Peer(f"10.0.1.{n}")) == Admit(True)
    full = _admit(reg, "LAST", Peer("10.0.9.9"))
    assert isinstance(full, Refuse) and (full.status, full.reason) == (
        503,
        "gateway_full",
    )
    assert len(reg.chargers) == len(reg.bindings) == 6
    # a known id already pending is no new place: its device still gets in
    assert _admit(reg, "A0", A) == Admit(False)


def test_a_refusal_is_logged_again_only_when_it_changes() -> None:
    reg = PendingRegistry(max_per_address=1)
    _admit(reg, "X", A)
    logs = []
    for i in range(5):
        verdict = _admit(reg, f"Y{i}", A)
        assert isinstance(verdict, Refuse)
        logs.append(verdict.log)
    assert logs == [True, False, False, False, False]
    assert reg.refusal(A, "bad_id", 400, "bad").log  # another reason: news
    assert not reg.refusal(A, "bad_id", 400, "bad").log
    assert reg.refusal(B, "bad_id", 400, "bad").log  # another address
    assert _admit(reg, "X", A) == Admit()  # admitted: the next refusal is news
    assert reg.refusal(A, "bad_id", 400, "bad").log


def test_the_log_state_of_addresses_is_bounded() -> None:
    reg = PendingRegistry()
    for i in range(5000):
        reg.refusal(Peer(f"10.{i // 250}.{i % 250}.1"), "bad_id", 400, "bad")
    assert len(reg._logged) <= 1024
    assert reg.refused["bad_id"] == 5000


@given(
    st.lists(
        st.tuples(st.integers(0, 9), st.integers(0, 40), st.booleans()),
        max_size=200,
    )
)
def test_bounds_hold_whatever_the_order(
    steps: list[tuple[int, int, bool]],
) -> None:
    reg = PendingRegistry(max_pending=12, max_per_address=3)
    now = T0
    for address, cid, forget in steps:
        now += timedelta(minutes=1)
        if forget:
            reg.forget(f"C{cid}")
        else:
            _admit(reg, f"C{cid}", Peer(f"10.0.0.{address}"), now)
        per_address: dict[str | None, int] = {}
        for b in reg.bindings.values():
            per_address[b.peer.address] = per_address.get(b.peer.address, 0) + 1
        assert len(reg.bindings) <= 12
        assert max(per_address.values(), default=0) <= 3
        assert set(reg.bindings) == set(reg.chargers)


# -- expiry, approval, delivery, forget ---------------------------------------


def test_pending_ids_expire_only_without_a_connection() -> None:
    reg = PendingRegistry(max_per_address=2, expire_after=timedelta(hours=24))
    _admit(reg, "LIVE", A)
    _admit(reg, "GONE", A)
    conn = object()
    assert reg.connected("LIVE", conn, T0, remote="10.0.0.5:1", version="2.0.1")
    assert reg.chargers["LIVE"].ocpp_version == "2.0.1"
    assert isinstance(_admit(reg, "THIRD", A), Refuse)
    assert reg.expire(T0 + timedelta(hours=23, minutes=59)) == []
    later = T0 + timedelta(hours=24)
    assert reg.expire(later) == ["GONE"]
    assert list(reg.chargers) == ["LIVE"]  # connected: never stale
    assert _admit(reg, "THIRD", A, later) == Admit(True)  # its place is free
    reg.disconnected("LIVE", object(), later)  # another connection: no effect
    assert reg.bindings["LIVE"].live
    reg.disconnected("LIVE", conn, later)
    assert reg.expire(later + timedelta(hours=24)) == ["LIVE", "THIRD"]


def test_a_waiting_password_goes_to_the_bound_device_only() -> None:
    reg = PendingRegistry()
    _admit(reg, "NEW", A)
    binding = reg.approved("NEW")
    assert binding is not None and "NEW" not in reg.chargers
    reg.hold_delivery("NEW", binding)
    assert reg.admit_delivery("NEW", A, T0) == Admit()
    rogue = reg.admit_delivery("NEW", B, T0)
    assert isinstance(rogue, Refuse) and (rogue.status, rogue.reason) == (
        401,
        "conflict",
    )
    assert [c.peer for c in reg.deliveries["NEW"].conflicts] == [B]
    nothing = reg.admit_delivery("OTHER", A, T0)
    assert isinstance(nothing, Refuse) and nothing.reason == "unauthorized"
    reg.delivered("NEW", "Accepted")
    assert reg.deliveries == {} and reg.delivery_results == {"NEW": "Accepted"}


def test_forget_makes_the_next_connection_the_first() -> None:
    reg = PendingRegistry()
    _admit(reg, "NEW", B)  # the wrong device came first
    assert isinstance(_admit(reg, "NEW", A), Refuse)
    forgotten = reg.forget("NEW")
    assert forgotten is not None and forgotten.peer == B
    assert reg.forget("NEW") is None
    assert _admit(reg, "NEW", A) == Admit(True)
    assert isinstance(_admit(reg, "NEW", B), Refuse)
    # a connection registered after its id was forgotten is not bound
    reg.forget("NEW")
    assert not reg.connected("NEW", object(), T0, remote=None, version="1.6")


# -- charger ids ----------------------------------------------------------------

BAD_IDS = [
    ("a b", "character ' '"),
    ("x" * 49, "longer than 48"),
    ("caf\u00e9", "not ASCII"),
    ("..", "dot segment"),
    (".", "dot segment"),
    ("", "empty"),
    ("a/b", "character '/'"),
    ("CP\x00", "character '\\x00'"),
    ("\udcc3\udca9", "not ASCII"),  # raw UTF-8 bytes as websockets passes them
    ("CP#1", "character '#'"),
]


@pytest.mark.parametrize(("identity", "problem"), BAD_IDS)
def test_a_bad_charger_id_is_named_and_refused_everywhere(
    identity: str, problem: str
) -> None:
    found = charger_id_problem(identity)
    assert found is not None and problem in found
    with pytest.raises(ValidationError):
        ChargerConfig(id=identity)


@pytest.mark.parametrize("identity", ["CP1", "x" * 48, "a*b-c_d=e:f+g|h@i.j", "..a"])
def test_good_charger_ids_pass(identity: str) -> None:
    assert charger_id_problem(identity) is None
    assert ChargerConfig(id=identity).id == identity


def test_the_edge_checks_ids_against_the_clouds_pattern() -> None:
    """What the edge lets in is what the cloud's API and planner take."""
    from cloud.api.deps import CHARGER_PATTERN  # the cloud's whole API package

    assert CHARGE_POINT_ID_PATTERN == CHARGER_PATTERN
    (field,) = ChargerId.__metadata__
    assert [m.pattern for m in field.metadata] == [CHARGE_POINT_ID_PATTERN]


def test_percent_decoding_happens_before_the_check() -> None:
    for path in ("/ocpp/%2E%2E", "/ocpp/a%20b", "/ocpp/%C3%A9", "/ocpp/a%2Fb"):
        identity = identity_from_path(path)
        assert identity is not None and charger_id_problem(identity) is not None


def test_frames_carrying_a_charger_password_are_redacted_for_the_log() -> None:
    set_201 = (
        '[2,"m1","SetVariables",{"setVariableData":[{"component":{"name":'
        '"SecurityCtrlr"},"variable":{"name":"BasicAuthPassword"},'
        '"attributeValue":"s3cret \\"quoted\\" pass"}]}]'
    )
    assert "s3cret" not in redact_secrets(set_201)
    assert '"attributeValue":"<redacted>"' in redact_secrets(set_201)
    set_16 = '[2,"m2","ChangeConfiguration",{"key":"AuthorizationKey","value":"6162"}]'
    assert redact_secrets(set_16).endswith('"value":"<redacted>"}]')
    other = '[2,"m3","ChangeConfiguration",{"key":"HeartbeatInterval","value":"60"}]'
    assert redact_secrets(other) == other

"""Raw OCPP-J frame screening (``protocols.ocpp.frames``): text in, verdict out."""

from __future__ import annotations

import json

import pytest

from protocols.ocpp.frames import (
    Drop,
    Reject,
    Route,
    refuse_while_pending,
    respell_16,
    screen,
)


@pytest.mark.parametrize(
    ("raw", "version", "code", "message_id"),
    [
        ("not json", "1.6", "FormationViolation", "-1"),
        ("not json", "2.0.1", "RpcFrameworkError", "-1"),
        (b"\xff\xfe\xfd", "2.0.1", "RpcFrameworkError", "-1"),
        ("{}", "2.0.1", "RpcFrameworkError", "-1"),
        ("[]", "1.6", "FormationViolation", "-1"),
        ('[9, "m1", "Heartbeat", {}]', "2.0.1", "MessageTypeNotSupported", "m1"),
        ('[9, "m1", "Heartbeat", {}]', "1.6", "FormationViolation", "m1"),
        ('[true, "m1", "Heartbeat", {}]', "2.0.1", "MessageTypeNotSupported", "m1"),
        ('[2, "m1", "Heartbeat"]', "2.0.1", "RpcFrameworkError", "m1"),
        ('[2, 7, "Heartbeat", {}]', "2.0.1", "RpcFrameworkError", "-1"),
        ('[2, "m1", 5, {}]', "1.6", "FormationViolation", "m1"),
        ('[2, "m1", "Heartbeat", []]', "2.0.1", "FormatViolation", "m1"),
    ],
)
def test_frames_the_library_must_not_see_are_answered(
    raw: str | bytes, version: str, code: str, message_id: str
) -> None:
    verdict = screen(raw, version)
    assert isinstance(verdict, Reject)
    assert (verdict.code, verdict.message_id) == (code, message_id)
    answer = json.loads(verdict.frame())
    assert answer == [4, message_id, code, verdict.description, {}]


@pytest.mark.parametrize(
    "raw", ['[3, "m1"]', "[3, 7, {}]", '[4, "m1", "InternalError", "x"]']
)
def test_malformed_responses_are_dropped_unanswered(raw: str) -> None:
    assert screen(raw, "2.0.1") == Drop()


@pytest.mark.parametrize(
    "raw",
    [
        '[2, "m1", "Heartbeat", {}]',
        '[3, "m1", {}]',
        '[4, "m1", "InternalError", "x", {}]',
    ],
)
def test_well_formed_frames_are_routed(raw: str) -> None:
    assert screen(raw, "1.6") == Route(json.loads(raw))


def test_a_pending_charger_may_only_boot_and_beat() -> None:
    for version in ("1.6", "2.0.1"):
        assert refuse_while_pending([2, "m1", "BootNotification", {}], version) is None
        assert refuse_while_pending([3, "m3", {}], version) is None
        refusal = refuse_while_pending([2, "m4", "StatusNotification", {}], version)
        assert refusal == Reject("SecurityError", "m4", "charger is pending acceptance")
    # 1.6 keeps its heartbeat; 2.0.1 B02.FR.09 wants SecurityError for it too
    assert refuse_while_pending([2, "m2", "Heartbeat", {}], "1.6") is None
    refusal = refuse_while_pending([2, "m2", "Heartbeat", {}], "2.0.1")
    assert refusal == Reject("SecurityError", "m2", "charger is pending acceptance")


def test_callerrors_to_16_chargers_use_the_16_spelling() -> None:
    sent = json.dumps([4, "m1", "FormatViolation", "bad", {}])
    assert json.loads(respell_16(sent))[2] == "FormationViolation"
    sent = json.dumps([4, "m1", "OccurrenceConstraintViolation", "bad", {}])
    assert json.loads(respell_16(sent))[2] == "OccurenceConstraintViolation"
    for same in (
        json.dumps([4, "m1", "InternalError", "x", {}]),
        json.dumps([3, "m1", {"status": "FormatViolation"}]),
    ):
        assert respell_16(same) == same

"""The pure command builders and answer readers of ``edge.ocpp.commands``."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from edge.ocpp.auth import check_basic_auth
from edge.ocpp.commands import (
    CAPABILITY_KEYS_16,
    Variable,
    authorization_key_16,
    capabilities_16,
    capabilities_201,
    change_availability_request,
    change_configuration_request,
    configuration_answer,
    get_configuration_request,
    get_variables_request,
    remote_start_request,
    remote_stop_request,
    reset_request,
    set_variables_request,
    trigger_message_request,
    variables_answer,
)
from protocols.ocpp import (
    ChargingProfile,
    ChargingSchedule,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    SchedulePeriod,
)

TX = ChargingProfile(
    id=5,
    stack_level=1,
    purpose=ProfilePurpose.TX,
    kind=ProfileKind.ABSOLUTE,
    schedules=(
        ChargingSchedule(
            rate_unit=RateUnit.A,
            periods=(SchedulePeriod(0, 16.0),),
            start_schedule=datetime(2026, 1, 1, tzinfo=UTC),
        ),
    ),
)


def test_remote_start_per_version() -> None:
    assert remote_start_request("1.6", "TAG1") == (
        "RemoteStartTransaction",
        {"idTag": "TAG1"},
    )
    action, payload = remote_start_request(
        "1.6", "TAG1", connector_or_evse_id=2, profile=TX
    )
    assert payload["connectorId"] == 2
    assert payload["chargingProfile"]["chargingProfilePurpose"] == "TxProfile"
    assert "transactionId" not in payload["chargingProfile"]
    action, payload = remote_start_request(
        "2.0.1", "TAG1", connector_or_evse_id=1, remote_start_id=42, profile=TX
    )
    assert action == "RequestStartTransaction"
    assert payload["idToken"] == {"idToken": "TAG1", "type": "Central"}
    assert payload["remoteStartId"] == 42 and payload["evseId"] == 1
    assert payload["chargingProfile"]["chargingSchedule"][0]["chargingRateUnit"] == "A"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"id_tag": ""}, "id_tag"),
        ({"id_tag": "T" * 21}, "too long"),
        ({"id_tag": "T", "connector_or_evse_id": 0}, "> 0"),
    ],
)
def test_remote_start_refuses_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        remote_start_request("1.6", **kwargs)


def test_remote_start_takes_only_an_unbound_tx_profile() -> None:
    default = ChargingProfile(
        id=5,
        stack_level=1,
        purpose=ProfilePurpose.TX_DEFAULT,
        kind=ProfileKind.ABSOLUTE,
        schedules=TX.schedules,
    )
    with pytest.raises(ValueError, match="TxProfile"):
        remote_start_request("2.0.1", "T", profile=default)
    bound = ChargingProfile(
        id=5,
        stack_level=1,
        purpose=ProfilePurpose.TX,
        kind=ProfileKind.ABSOLUTE,
        schedules=TX.schedules,
        transaction_id="abc",
    )
    with pytest.raises(ValueError, match="binds"):
        remote_start_request("2.0.1", "T", profile=bound)


def test_remote_stop_ids_per_version() -> None:
    assert remote_stop_request("1.6", "17") == (
        "RemoteStopTransaction",
        {"transactionId": 17},
    )
    assert remote_stop_request("2.0.1", 17) == (
        "RequestStopTransaction",
        {"transactionId": "17"},
    )
    with pytest.raises(ValueError, match="integer"):
        remote_stop_request("1.6", "abc")


def test_trigger_reset_availability_per_version() -> None:
    assert trigger_message_request("1.6", "MeterValues", 1)[1] == {
        "requestedMessage": "MeterValues",
        "connectorId": 1,
    }
    assert trigger_message_request("2.0.1", "MeterValues", 1)[1] == {
        "requestedMessage": "MeterValues",
        "evse": {"id": 1},
    }
    assert reset_request("1.6", "hard")[1] == {"type": "Hard"}
    assert reset_request("2.0.1", "soft")[1] == {"type": "OnIdle"}
    with pytest.raises(ValueError, match="soft"):
        reset_request("1.6", "Hard")
    assert change_availability_request("1.6", 0, False)[1] == {
        "connectorId": 0,
        "type": "Inoperative",
    }
    assert change_availability_request("2.0.1", 0, True)[1] == {
        "operationalStatus": "Operative"
    }
    assert change_availability_request("2.0.1", 2, False)[1] == {
        "operationalStatus": "Inoperative",
        "evse": {"id": 2},
    }


def test_configuration_requests_and_answers() -> None:
    assert get_configuration_request() == ("GetConfiguration", {})
    assert get_configuration_request(["A"]) == ("GetConfiguration", {"key": ["A"]})
    with pytest.raises(ValueError, match="500"):
        change_configuration_request("K", "v" * 501)
    known, unknown = configuration_answer(
        {
            "configuration_key": [
                {"key": "A", "readonly": True, "value": "1"},
                {"key": "B", "readonly": False},
                "junk",
            ],
            "unknown_key": ["C"],
        }
    )
    assert known == {"A": "1", "B": None} and unknown == ["C"]
    var = Variable("OCPPCommCtrlr", "HeartbeatInterval", variable_instance="x")
    assert get_variables_request([var])[1] == {
        "getVariableData": [
            {
                "component": {"name": "OCPPCommCtrlr"},
                "variable": {"name": "HeartbeatInterval", "instance": "x"},
            }
        ]
    }
    assert (
        set_variables_request([(var, "30")])[1]["setVariableData"][0]["attributeValue"]
        == "30"
    )
    with pytest.raises(ValueError, match="at least one"):
        get_variables_request([])
    assert variables_answer(
        {
            "get_variable_result": [
                {
                    "attribute_status": "Accepted",
                    "attribute_value": "30",
                    "component": {"name": "OCPPCommCtrlr"},
                    "variable": {"name": "HeartbeatInterval"},
                }
            ]
        },
        "get_variable_result",
    ) == {"OCPPCommCtrlr.HeartbeatInterval": ("Accepted", "30")}


@pytest.mark.parametrize(
    ("raw", "units"),
    [
        ("Current,Power", {"A", "W"}),
        ("Current", {"A"}),
        ("W", {"W"}),  # field spellings seen in the wild
        ("a; w", {"A", "W"}),
        ("'Power'", {"W"}),
        ("", set()),
        ("Volts", set()),
    ],
)
def test_rate_units_are_read_tolerantly(raw: str, units: set[str]) -> None:
    caps = capabilities_16({"ChargingScheduleAllowedChargingRateUnit": raw})
    assert caps.rate_units == units


def test_capabilities_16() -> None:
    caps = capabilities_16(
        {
            "SupportedFeatureProfiles": "Core, SmartCharging,RemoteTrigger",
            "ChargeProfileMaxStackLevel": "3",
            "ChargingScheduleMaxPeriods": "x",
            "MaxChargingProfilesInstalled": "-1",
            "NumberOfConnectors": "2",
        }
    )
    assert caps.smart_charging is True
    assert caps.max_stack_level == 3
    assert caps.max_periods is None and caps.max_profiles is None
    assert caps.connectors == 2
    assert capabilities_16({"SupportedFeatureProfiles": "Core"}).smart_charging is False
    assert capabilities_16({}).smart_charging is None
    assert "ChargeProfileMaxStackLevel" in CAPABILITY_KEYS_16


def test_capabilities_201() -> None:
    caps = capabilities_201(
        {
            "SmartChargingCtrlr.Enabled": ("Accepted", "false"),
            "SmartChargingCtrlr.ProfileStackLevel": ("Accepted", "5"),
            "SmartChargingCtrlr.RateUnit": ("Accepted", "A,W"),
            "SmartChargingCtrlr.PeriodsPerSchedule": ("UnknownVariable", None),
        }
    )
    assert caps.smart_charging is False
    assert caps.max_stack_level == 5 and caps.max_periods is None
    assert caps.rate_units == {"A", "W"}
    unsaid = capabilities_201(
        {
            "SmartChargingCtrlr.Enabled": ("UnknownVariable", None),
            "SmartChargingCtrlr.ProfileStackLevel": ("Accepted", "2"),
        }
    )
    assert unsaid.smart_charging is True  # the controller exists and answers
    assert capabilities_201({}).smart_charging is None


# -- the password the edge sets on an approved charger ------------------------------


def _basic(identity: str, password: bytes) -> str:
    return "Basic " + base64.b64encode(identity.encode() + b":" + password).decode()


@pytest.mark.parametrize(
    "password",
    ["a-new-charger-pass", "0123456789abcdef0123456789ABCDEF", "Grüße-aus-Köln-16"],
)
def test_the_authorization_key_passes_in_every_form_a_charger_sends(
    password: str,
) -> None:
    key = authorization_key_16(password)
    raw = bytes.fromhex(key)  # the key must be hex
    if (
        password.isascii()
        and len(password) % 2 == 0
        and all(c in "0123456789abcdefABCDEF" for c in password)
    ):
        assert key == password and len(raw) == 16  # hex names its own bytes
    else:
        assert raw == password.encode("utf-8")
    # the spec's raw bytes, and the hex text many chargers send instead
    assert check_basic_auth(_basic("CP1", raw), "CP1", password)
    assert check_basic_auth(_basic("CP1", key.encode()), "CP1", password)
    assert not check_basic_auth(_basic("CP1", raw[:-1]), "CP1", password)
    assert not check_basic_auth(_basic("CP2", raw), "CP1", password)

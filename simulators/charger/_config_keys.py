"""Configuration keys (1.6 GetConfiguration/ChangeConfiguration, 2.0.1
Get/SetVariables) and the Basic auth password the CSMS may set."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

from simulators.charger._ev_model import EvModelLayer
from simulators.charger._profiles import MAX_PERIODS, MAX_PROFILES, MAX_STACK_LEVEL

log = logging.getLogger("fusebox.sim.charger")


@dataclass(frozen=True, slots=True)
class ConfigKey:
    """One configuration value under its 1.6 key and its 2.0.1 variable."""

    key: str
    """1.6 configuration key."""
    component: str
    variable: str
    """2.0.1 device-model component and variable."""
    readonly: bool


CONFIG_KEYS: Final = (
    ConfigKey("HeartbeatInterval", "OCPPCommCtrlr", "HeartbeatInterval", False),
    ConfigKey(
        "MeterValueSampleInterval", "SampledDataCtrlr", "TxUpdatedInterval", False
    ),
    ConfigKey(
        "MeterValuesSampledData",
        "SampledDataCtrlr",
        "TxUpdatedMeasurands",
        True,
    ),
    ConfigKey("NumberOfConnectors", "EVSE", "Count", True),
    ConfigKey(
        "ChargeProfileMaxStackLevel", "SmartChargingCtrlr", "ProfileStackLevel", True
    ),
    ConfigKey(
        "ChargingScheduleMaxPeriods", "SmartChargingCtrlr", "PeriodsPerSchedule", True
    ),
    ConfigKey(
        "ChargingScheduleAllowedChargingRateUnit",
        "SmartChargingCtrlr",
        "RateUnit",
        True,
    ),
    ConfigKey("MaxChargingProfilesInstalled", "SmartChargingCtrlr", "Entries", True),
    ConfigKey("SupportedFeatureProfiles", "DeviceDataCtrlr", "SupportedFeatures", True),
)
_BY_KEY: Final = {k.key: k for k in CONFIG_KEYS}
# write-only, never read back: 1.6 AuthorizationKey, 2.0.1 this variable
_BASIC_AUTH_PASSWORD: Final = ("SecurityCtrlr", "BasicAuthPassword")
_BY_VARIABLE: Final = {(k.component, k.variable): k for k in CONFIG_KEYS}


class ConfigurationLayer(EvModelLayer):
    """The configuration the CSMS reads and changes."""

    def _config_value(self, key: ConfigKey) -> str:
        stored = self.state.data["config"].get(key.key)
        if stored is not None:
            return str(stored)
        return {
            "HeartbeatInterval": str(int(self.heartbeat_s or 0)),
            "MeterValueSampleInterval": f"{self.meter_interval_s:g}",
            "MeterValuesSampledData": (
                "Energy.Active.Import.Register,Power.Active.Import,Current.Import,SoC"
            ),
            "NumberOfConnectors": str(self.config.connectors),
            "ChargeProfileMaxStackLevel": str(MAX_STACK_LEVEL),
            "ChargingScheduleMaxPeriods": str(MAX_PERIODS),
            "ChargingScheduleAllowedChargingRateUnit": "Current,Power",
            "MaxChargingProfilesInstalled": str(MAX_PROFILES),
            "SupportedFeatureProfiles": "Core,SmartCharging,RemoteTrigger",
        }[key.key]

    def get_configuration(
        self, keys: list[str] | None
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """GetConfiguration (1.6): the known keys asked for (all if ``keys`` is
        empty) and the unknown ones."""
        wanted = keys or [k.key for k in CONFIG_KEYS]
        known = [
            {
                "key": name,
                "readonly": _BY_KEY[name].readonly,
                "value": self._config_value(_BY_KEY[name]),
            }
            for name in wanted
            if name in _BY_KEY
        ]
        return known, [name for name in wanted if name not in _BY_KEY]

    def change_configuration(self, key: str, value: str) -> str:
        """ChangeConfiguration (1.6): the status to answer; an accepted value is
        used at once and kept in the state file."""
        if key == "AuthorizationKey":
            return self._set_password(value, hex_key=True)
        entry = _BY_KEY.get(key)
        if entry is None:
            return "NotSupported"
        if entry.readonly:
            return "Rejected"
        try:
            number = float(value)
        except ValueError:
            return "Rejected"
        if number <= 0:
            return "Rejected"
        if key == "HeartbeatInterval":
            self.heartbeat_s = number
            self.heartbeat_changed.set()
        elif key == "MeterValueSampleInterval":
            self.meter_interval_s = number
        self.state.data["config"][key] = value
        self.state.save()
        return "Accepted"

    def get_variable(self, data: dict[str, Any]) -> dict[str, Any]:
        """One GetVariables (2.0.1) result for one requested variable."""
        component = data.get("component", {})
        variable = data.get("variable", {})
        entry = _BY_VARIABLE.get((component.get("name"), variable.get("name")))
        result: dict[str, Any] = {"component": component, "variable": variable}
        if entry is None:
            known = any(k.component == component.get("name") for k in CONFIG_KEYS)
            result["attribute_status"] = (
                "UnknownVariable" if known else "UnknownComponent"
            )
            return result
        value = self._config_value(entry)
        if entry.key == "ChargingScheduleAllowedChargingRateUnit":
            value = "A,W"
        result.update(attribute_status="Accepted", attribute_value=value)
        return result

    def set_variable(self, data: dict[str, Any]) -> dict[str, Any]:
        """One SetVariables (2.0.1) result; a value is set as ``change_configuration``
        sets its 1.6 key."""
        component = data.get("component", {})
        variable = data.get("variable", {})
        entry = _BY_VARIABLE.get((component.get("name"), variable.get("name")))
        result: dict[str, Any] = {"component": component, "variable": variable}
        if (component.get("name"), variable.get("name")) == _BASIC_AUTH_PASSWORD:
            status = self._set_password(str(data.get("attribute_value")), hex_key=False)
            result["attribute_status"] = status
            return result
        if entry is None:
            known = any(k.component == component.get("name") for k in CONFIG_KEYS)
            result["attribute_status"] = (
                "UnknownVariable" if known else "UnknownComponent"
            )
            return result
        status = self.change_configuration(entry.key, str(data.get("attribute_value")))
        result["attribute_status"] = "Accepted" if status == "Accepted" else "Rejected"
        return result

    def _set_password(self, value: str, *, hex_key: bool) -> str:
        """A new Basic auth password from the CSMS (write-only), used from the next
        connection on and kept in the state file: 1.6 ``AuthorizationKey`` is the
        hex of 16-20 key bytes (sent raw, as the OCPP-J example does), 2.0.1
        ``BasicAuthPassword`` is 16-40 characters of text."""
        if hex_key:
            try:
                key = bytes.fromhex(value)
            except ValueError:
                return "Rejected"
            if not 16 <= len(key) <= 20:
                return "Rejected"
            self.state.data["auth_key_hex"] = key.hex()
        else:
            if not 16 <= len(value) <= 40:
                return "Rejected"
            self.state.data["auth_key_hex"] = value.encode("utf-8").hex()
        self.state.save()
        log.info("%s: new Basic auth password from the CSMS", self.config.charger_id)
        return "Accepted"

    def _credentials(self) -> bytes | None:
        """The Basic auth password: the one the CSMS set, else ``--password``."""
        stored = self.state.data.get("auth_key_hex")
        if isinstance(stored, str):
            return bytes.fromhex(stored)
        if self.config.password is not None:
            return self.config.password.encode("utf-8")
        return None

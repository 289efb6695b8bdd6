"""aiomqtt for the simulators: the one simulator module that imports it (an
import-linter contract keeps it so)."""

from __future__ import annotations

from aiomqtt import Client, MqttError, ProtocolVersion

__all__ = ["Client", "MqttError", "ProtocolVersion"]

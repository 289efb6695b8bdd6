"""The site broker's durability: the Mosquitto config the edge recommends, and
what a given config promises.

A meter's reading is the site broker's to keep from the moment the broker sends
the meter its PUBACK until the edge has committed it to the outbox. Mosquitto
keeps messages in memory and saves a snapshot of its whole database (new file,
fsync, rename); by default every 30 min, in our old deploy config every 30 s.
A crash between a PUBACK and the next snapshot loses what the edge does not hold
yet. ``autosave_on_changes true`` with ``autosave_interval 1`` saves in the same
turn of the broker's loop as the PUBACK of every message it queues for the edge,
so a crash can only lose the readings acknowledged while that save was running
(README, "How it keeps readings safe", states the measured window).

It also bounds the packet size (``max_packet_size``,
``protocols.broker_limits.SITE_MAX_PACKET_BYTES``): a LAN client cannot make the
broker buffer, queue and save megabytes.

``SITE_BROKER_CONF`` is the config ``fusebox edge init`` writes beside the edge
config; ``deploy/mosquitto-site.conf`` carries the same settings (a unit test
holds them together). ``read_durability`` is what the edge shows the installer:
what the broker's config file says, read at start (``local.broker_config``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from protocols.broker_limits import SITE_MAX_PACKET_BYTES

# Mosquitto 2.0 defaults for the settings below (man mosquitto.conf)
_DEFAULT_AUTOSAVE_INTERVAL = 1800

SITE_BROKER_CONF = """\
# Site MQTT broker (Mosquitto 2) for the Fusebox edge: the smart meters publish
# here and the edge reads with one persistent session (QoS 1). Written by
# `fusebox edge init`; run it with:  mosquitto -c THIS_FILE
# (or copy it over /etc/mosquitto/mosquitto.conf). The edge config's
# [local] broker_config names this file, so the installer's page shows what it
# promises. Keep it in step with the broker really running.

# All interfaces: the meters are on the site LAN and connect without credentials.
listener {port}
allow_anonymous true

# Durability. Mosquitto acknowledges a meter's reading (PUBACK) before it is on
# disk and saves its whole database as a snapshot (new file, fsync, rename).
# On changes, interval 1: every reading it queues for the edge (and every
# subscription and every ack) triggers a save in the same turn of its loop, so
# a crash loses at most the readings acknowledged while that save was
# running (milliseconds; see README "How it keeps readings safe"). With the
# default timed save (30 min) a crash lost every reading since the last one.
persistence true
persistence_location {persistence_location}
autosave_on_changes true
autosave_interval 1
# Cost: each save rewrites the database. With the edge up it is a few KB per
# reading; while the edge is down it grows with the queue (about 0.45 KB per
# queued meter reading: 4.4 MB at 10,000, saved in about 10 ms on an SSD;
# 45 MB at 100,000). A disk that cannot take that (an SD card) may raise the
# interval to N changes: a crash can then also lose up to N-1 queued readings.

# Room for a long edge outage: the default queue (1000 messages per client)
# holds under an hour of three meters; this holds days. A reading past it is
# dropped although the meter got its PUBACK.
max_queued_messages 100000
# Hand a returning edge its backlog 1000 at a time, not 20: every ack is a
# change that triggers a save, and one save per 20 readings makes draining a
# 10,000 backlog take 12 s instead of half a second.
max_inflight_messages 1000

# Largest packet accepted (bytes, header and topic included): a client sending
# a bigger one is disconnected before the broker buffers, queues and saves it.
# A meter's reading is at most 64 KiB (the edge counts a bigger one as
# too_large and drops it); 256 KiB leaves room for its topic and for other
# small devices on the LAN.
max_packet_size {max_packet_size}

log_dest stdout
log_timestamp_format %Y-%m-%dT%H:%M:%S
"""


def site_broker_config(*, persistence_location: str, port: int = 1883) -> str:
    """The recommended site broker config, listening on ``port`` and keeping its
    database in the directory ``persistence_location``."""
    location = persistence_location.rstrip("/") + "/"
    return SITE_BROKER_CONF.format(
        port=port,
        persistence_location=location,
        max_packet_size=SITE_MAX_PACKET_BYTES,
    )


@dataclass(frozen=True, slots=True)
class Durability:
    """The persistence settings of a Mosquitto config, and what they promise."""

    persistence: bool = False
    autosave_on_changes: bool = False
    autosave_interval: int = _DEFAULT_AUTOSAVE_INTERVAL
    max_queued_messages: int = 1000

    @property
    def every_message(self) -> bool:
        """True when every queued reading is saved right after its PUBACK."""
        return (
            self.persistence
            and self.autosave_on_changes
            and self.autosave_interval == 1
        )

    @property
    def summary(self) -> str:
        """What a crash of the broker can lose, in the installer's words."""
        if not self.persistence:
            return "no persistence: a broker restart loses every queued reading"
        if self.autosave_interval == 0:
            return "saved only at shutdown: a crash loses every queued reading"
        if self.every_message:
            return "saves every reading: a crash loses at most the last save's"
        if self.autosave_on_changes:
            return (
                f"saves every {self.autosave_interval} changes: a crash can lose "
                f"up to {self.autosave_interval - 1} queued readings"
            )
        return (
            f"saves every {self.autosave_interval} s: a crash loses the "
            "readings queued since the last save"
        )


def mosquitto_settings(text: str) -> dict[str, str]:
    """``key -> value`` of a mosquitto.conf text, comments skipped; the last
    value of a repeated key wins (right for the global settings read here)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        values[key] = value.strip()
    return values


def parse_durability(text: str) -> Durability:
    """The persistence settings in a mosquitto.conf text (the last value of a
    repeated key wins, as in Mosquitto); missing keys take Mosquitto's defaults.
    Raises ``ValueError`` naming a setting whose value is not understood."""
    values = mosquitto_settings(text)
    try:
        return Durability(
            persistence=_flag(values, "persistence", False),
            autosave_on_changes=_flag(values, "autosave_on_changes", False),
            autosave_interval=int(
                values.get("autosave_interval", _DEFAULT_AUTOSAVE_INTERVAL)
            ),
            max_queued_messages=int(values.get("max_queued_messages", 1000)),
        )
    except ValueError as exc:
        raise ValueError(f"a setting Fusebox does not understand: {exc}") from None


def _flag(values: dict[str, str], key: str, default: bool) -> bool:
    value = values.get(key)
    if value is None:
        return default
    if value not in ("true", "false"):
        raise ValueError(f"{key} {value!r} (true or false)")
    return value == "true"


def read_durability(path: str | os.PathLike[str]) -> Durability | str:
    """The durability the site broker's config file at ``path`` promises, or a
    sentence saying why it cannot be told (unreadable, not understood)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return f"unknown: cannot read {p} ({exc})"
    if any(
        line.strip().startswith(("include_dir ", "include_dir\t"))
        for line in text.splitlines()
    ):
        return f"unknown: {p} includes other files (include_dir); name the full file"
    try:
        return parse_durability(text)
    except ValueError as exc:
        return f"unknown: {p}: {exc}"

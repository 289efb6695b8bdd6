"""The commented starter config written by ``fusebox edge init``.

It runs as is against ``fusebox demo`` (cloud broker on 127.0.0.1:18830, site
broker on 127.0.0.1:18831, the demo's three simulated meters); for a real site,
change the URLs and the meters.
"""

from __future__ import annotations

import json

DEMO_CLOUD_MQTT_PORT = 18830
DEMO_LOCAL_MQTT_PORT = 18831

# (config id, format, base topic, simulator --device)
DEMO_METERS = (
    ("grid-glow", "glow", "glow/glow-demo", "glow-demo"),
    ("grid-tasmota", "tasmota", "tele/tasmota-demo", "tasmota-demo"),
    ("grid-shelly", "shelly", "shellypro3em-demo", "shellypro3em-demo"),
)

_TEMPLATE = """\
# Fusebox edge agent configuration.
# Validate with:  fusebox edge check --config THIS_FILE
# Run with:       fusebox edge run --config THIS_FILE
# Environment overrides: FUSEBOX_CLOUD_MQTT_URL, FUSEBOX_LOCAL_MQTT_URL.

# This gateway's id: letters, digits, '_', '.', '-'. It names its MQTT topics
# (fusebox/v1/gw/<gateway_id>/...) and its rows in the cloud.
gateway_id = "{gateway_id}"

[cloud]
# The cloud broker. mqtts:// for TLS (use it on every link that leaves the site).
mqtt_url = "mqtt://127.0.0.1:{cloud_port}"
# This gateway's own broker credentials (issued by the installer flow):
# username = "{gateway_id}"
# password = "..."

[local]
# The site's broker that the meters publish to.
mqtt_url = "mqtt://127.0.0.1:{local_port}"
# That broker's own config file (`fusebox edge init` writes one beside this
# file). The edge only reads it, to show the installer what a broker crash can
# lose; the broker must run with it (mosquitto -c FILE).
{broker_config_line}
# Reconnect backoff cap (s): the broker is on the site, so the edge's session is
# back before the meters' readings pile up in it.
reconnect_max_s = 1

[outbox]
# Every reading is kept here until the cloud has stored it.
path = "var/edge/{gateway_id}/outbox.db"
# Disk cap in MB. Past it, power samples are thinned (oldest first); energy
# registers are never dropped. 30 days of 10 meters at one reading per 10 s is
# about 65 MB.
cap_mb = 512
# FULL survives power loss; NORMAL only a process crash, and is faster.
synchronous = "FULL"

[uplink]
batch_max_records = 5000   # readings per batch message
window = 4                 # batches in flight without an ack
ack_timeout_s = 30         # resend a batch with no answer after this
retry_base_s = 1.0         # resend backoff: full jitter, doubling from here
retry_cap_s = 60           # ... up to this
status_interval_s = 10     # gateway status (retained) every this many seconds

[metrics]
# Prometheus text on http://<listen>/metrics; comment out to turn off.
listen = "127.0.0.1:9108"

# Chargers: the gateway is the site's OCPP-J server (1.6 and 2.0.1 on one port,
# ws://<host>:<port>/<anything>/<charger id>). Uncomment to run it.
# [ocpp]
# host = "0.0.0.0"
# port = 9000
# security_profile = 1        # 1: Basic auth per charger; 2: TLS + Basic
#                             # (tls_cert = "...", tls_key = "...")
# allow_discovery = false     # true: unknown chargers wait as pending
# id_tags = ["04A1B2C3D4"]    # local authorisation list (works offline)
#
# [[chargers]]
# id = "CP1"
# password = "at-least-16-characters"   # or the 1.6 AuthorizationKey as hex
# # ocpp_version = "1.6"                # pin a version
# # [chargers.tolerance]                # only for firmware with known quirks
# # validation = "clip_strings"         # strict | clip_strings | off
# # energy_in_kwh = true                # registers labelled Wh are really kWh
# # clock = "gateway"                   # the charger's clock is wrong

# Meters: one [[meters]] table each; `type` picks the driver:
#   glow     Hildebrand Glow local MQTT: topic = "glow/<device MAC>"
#   tasmota  Tasmota energy/SML telemetry: topic = "tele/<device topic>"
#            (timezone = "Europe/London" if the device sends local time)
#   shelly   Shelly Pro EM / Pro 3EM Gen2: topic = "<MQTT prefix>"
#   generic  any JSON: topic = exact topic, plus a [meters.mapping] table, e.g.
#       [[meters]]
#       type = "generic"
#       id = "my-meter"
#       topic = "sim/my-meter/reading"
#       [meters.mapping]
#       timestamp_path = "ts"
#       timestamp_format = "unix_ms"
#       fields = [
#         {{ path = "meter.energy_kwh", quantity = "import_energy_wh", unit = "kWh" }},
#         {{ path = "meter.power_kw", quantity = "power_w", unit = "kW" }},
#       ]
{meters}"""


def starter_config(
    *,
    gateway_id: str = "gw-site-1",
    cloud_port: int = DEMO_CLOUD_MQTT_PORT,
    local_port: int = DEMO_LOCAL_MQTT_PORT,
    broker_config: str | None = None,
) -> str:
    """The commented starter edge config; ``broker_config`` names the site
    broker's config file (commented out when ``None``)."""
    broker_config_line = (
        f"broker_config = {json.dumps(broker_config)}"
        if broker_config is not None
        else '# broker_config = "/etc/mosquitto/mosquitto.conf"'
    )
    meters = "\n".join(
        f'[[meters]]\ntype = "{fmt}"\nid = "{mid}"\ntopic = "{topic}"\n'
        for mid, fmt, topic, _device in DEMO_METERS
    )
    return _TEMPLATE.format(
        gateway_id=gateway_id,
        cloud_port=cloud_port,
        local_port=local_port,
        broker_config_line=broker_config_line,
        meters=meters,
    )

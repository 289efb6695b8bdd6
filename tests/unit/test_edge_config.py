"""The edge config file: the starter parses, bad files say what and how to fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge import ConfigError
from edge.config import EdgeConfig, GenericMeter, load_config, parse_config
from fusebox.starter import DEMO_METERS, starter_config
from tests.harness.timing import timeout

REPO_ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """\
gateway_id = "gw-7"

[cloud]
mqtt_url = "mqtt://cloud.example:1883"
"""


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FUSEBOX_CLOUD_MQTT_URL", raising=False)
    monkeypatch.delenv("FUSEBOX_LOCAL_MQTT_URL", raising=False)


def _write(tmp_path: Path, text: str, name: str = "edge.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    return message


# ---------------------------------------------------------------------- starter


def test_starter_configs_commented_charger_section_parses(tmp_path: Path) -> None:
    """Uncommenting the [ocpp] and [[chargers]] example (and its tolerance table)
    gives a valid config: the example cannot rot."""
    lines = []
    for line in starter_config().splitlines():
        if line.startswith("# # "):
            line = line[4:]
        elif (line.startswith("# ") and line[2:3] in ("[", "")) or any(
            line.startswith(f"# {key} ")
            for key in (
                "host",
                "port",
                "security_profile",
                "allow_discovery",
                "id_tags",
                "id",
                "password",
            )
        ):
            line = line[2:]
        lines.append(line)
    config = load_config(_write(tmp_path, "\n".join(lines)))
    assert config.ocpp.port == 9000
    (charger,) = config.chargers
    assert charger.id == "CP1" and charger.ocpp_version == "1.6"
    assert charger.tolerance.validation == "clip_strings"
    assert charger.tolerance.energy_in_kwh and charger.tolerance.clock == "gateway"


def test_starter_config_parses(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, starter_config()))

    assert isinstance(config, EdgeConfig)
    assert config.gateway_id == "gw-site-1"
    assert config.cloud.mqtt_url == "mqtt://127.0.0.1:18830"
    assert config.local.mqtt_url == "mqtt://127.0.0.1:18831"
    assert config.outbox.path == Path("var/edge/gw-site-1/outbox.db")
    assert config.outbox.cap_mb == 512
    assert config.outbox.synchronous == "FULL"
    assert config.uplink.batch_max_records == 5000
    assert config.uplink.window == 4
    assert config.metrics.listen == "127.0.0.1:9108"
    assert [(m.id, m.type, m.topic) for m in config.meters] == [
        (mid, fmt, topic) for mid, fmt, topic, _device in DEMO_METERS
    ]


def test_starter_config_takes_the_gateway_id(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, starter_config(gateway_id="site.42")))
    assert config.gateway_id == "site.42"
    assert config.outbox.path == Path("var/edge/site.42/outbox.db")


def test_minimal_config_uses_defaults(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, MINIMAL))
    assert config.gateway_id == "gw-7"
    assert config.local.mqtt_url == "mqtt://127.0.0.1:1883"
    assert config.outbox.cap_mb == 512
    assert config.meters == []


def test_generic_meter_with_mapping(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            MINIMAL
            + """
[[meters]]
type = "generic"
id = "my-meter"
topic = "sim/my-meter/reading"
[meters.mapping]
timestamp_path = "ts"
timestamp_format = "unix_ms"
fields = [
  { path = "meter.energy_kwh", quantity = "import_energy_wh", unit = "kWh" },
  { path = "meter.power_kw", quantity = "power_w", unit = "kW" },
]
""",
        )
    )
    (meter,) = config.meters
    assert isinstance(meter, GenericMeter)
    assert (meter.id, meter.topic) == ("my-meter", "sim/my-meter/reading")


# ------------------------------------------------------------------ bad configs


def test_missing_gateway_id(tmp_path: Path) -> None:
    message = _error(tmp_path, '[cloud]\nmqtt_url = "mqtt://h:1883"\n')
    assert "1 problem(s) in the edge config" in message
    assert "  gateway_id: Field required -> add it" in message
    assert message.endswith("A commented example: fusebox edge init --out edge.toml")


def test_missing_cloud_url(tmp_path: Path) -> None:
    message = _error(tmp_path, 'gateway_id = "gw-1"\n[cloud]\n')
    assert "  cloud.mqtt_url: Field required -> add it" in message


def test_unknown_meter_type(tmp_path: Path) -> None:
    message = _error(
        tmp_path, MINIMAL + '[[meters]]\ntype = "modbus"\nid = "m1"\ntopic = "x"\n'
    )
    assert "  meters[0]: Input tag 'modbus' found using 'type' does not match" in (
        message
    )
    assert "-> use one of: glow, tasmota, shelly, generic" in message


def test_meter_without_type(tmp_path: Path) -> None:
    message = _error(tmp_path, MINIMAL + '[[meters]]\nid = "m1"\ntopic = "x"\n')
    assert "  meters[0]: Unable to extract tag using discriminator 'type'" in message
    assert '-> add type = "glow" | "tasmota" | "shelly" | "generic"' in message


@pytest.mark.parametrize(
    "url", ["http://cloud.example:1883", "cloud.example:1883", "ws://h"]
)
def test_bad_url_scheme(tmp_path: Path, url: str) -> None:
    message = _error(tmp_path, f'gateway_id = "gw-1"\n[cloud]\nmqtt_url = "{url}"\n')
    assert f"  cloud.mqtt_url: Value error, {url!r}: scheme must be mqtt:// or " in (
        message
    )
    assert "e.g. mqtt://127.0.0.1:1883" in message


def test_bad_local_url(tmp_path: Path) -> None:
    message = _error(tmp_path, MINIMAL + '[local]\nmqtt_url = "mqtt://"\n')
    assert "  local.mqtt_url: Value error, 'mqtt://': no host" in message


def test_duplicate_meter_ids(tmp_path: Path) -> None:
    message = _error(
        tmp_path,
        MINIMAL
        + '[[meters]]\ntype = "glow"\nid = "grid"\ntopic = "glow/a"\n'
        + '[[meters]]\ntype = "shelly"\nid = "grid"\ntopic = "shellypro3em-b"\n',
    )
    assert "meter id 'grid' is used twice; ids must be unique" in message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('gatway_id = "x"\n' + MINIMAL, "gatway_id"),
        (MINIMAL + 'client = "x"\n', "cloud.client"),
        (MINIMAL + "[outbox]\ncap_md = 5\n", "outbox.cap_md"),
        (MINIMAL + "[uplink]\nwindows = 5\n", "uplink.windows"),
        (
            MINIMAL + '[[meters]]\ntype = "glow"\nid = "g"\ntopic = "t"\ntopik = "t"\n',
            "meters[0].glow.topik",
        ),
    ],
)
def test_extra_key_typo(tmp_path: Path, text: str, where: str) -> None:
    message = _error(tmp_path, text)
    assert (
        f"  {where}: Extra inputs are not permitted -> remove it, or check its spelling"
        in message
    )


@pytest.mark.parametrize("cap", ["-1", "0"])
def test_cap_must_be_positive(tmp_path: Path, cap: str) -> None:
    message = _error(tmp_path, MINIMAL + f"[outbox]\ncap_mb = {cap}\n")
    assert "  outbox.cap_mb: Input should be greater than 0" in message


def test_bad_gateway_id(tmp_path: Path) -> None:
    message = _error(tmp_path, MINIMAL.replace("gw-7", "gw/7"))
    assert "  gateway_id: String should match pattern" in message
    assert "-> use letters, digits, '_', '.', '-' (at most 64)" in message


def test_every_problem_is_listed(tmp_path: Path) -> None:
    message = _error(tmp_path, "[outbox]\ncap_mb = -3\n")
    assert "3 problem(s) in the edge config" in message
    assert "  gateway_id: Field required -> add it" in message
    assert "  cloud: Field required -> add it" in message
    assert "  outbox.cap_mb: Input should be greater than 0" in message


def test_invalid_toml(tmp_path: Path) -> None:
    message = _error(tmp_path, 'gateway_id = "gw-1\n')
    assert "not valid TOML: " in message
    assert "(at line 1, column 19)" in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}: cannot read the edge config (No such file or directory); "
        f"create one with: fusebox edge init --out {path}"
    )


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the edge config \(Is a dir"):
        load_config(tmp_path)


def test_file_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_bytes(b'gateway_id = "\xff\xfe"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert "UTF-8" in str(info.value)


# ------------------------------------------------------------- env overrides


def test_env_overrides_both_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUSEBOX_CLOUD_MQTT_URL", "mqtts://user:pw@cloud.example:8883")
    monkeypatch.setenv("FUSEBOX_LOCAL_MQTT_URL", "mqtt://10.0.0.2:1884")
    config = load_config(_write(tmp_path, starter_config()))
    assert config.cloud.mqtt_url == "mqtts://user:pw@cloud.example:8883"
    assert config.local.mqtt_url == "mqtt://10.0.0.2:1884"


def test_env_supplies_a_missing_cloud_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUSEBOX_CLOUD_MQTT_URL", "mqtt://broker:1883")
    config = load_config(_write(tmp_path, 'gateway_id = "gw-1"\n'))
    assert config.cloud.mqtt_url == "mqtt://broker:1883"
    assert config.local.mqtt_url == "mqtt://127.0.0.1:1883"


def test_empty_env_does_not_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUSEBOX_CLOUD_MQTT_URL", "")
    config = load_config(_write(tmp_path, MINIMAL))
    assert config.cloud.mqtt_url == "mqtt://cloud.example:1883"


def test_bad_env_url_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUSEBOX_LOCAL_MQTT_URL", "http://10.0.0.2")
    message = _error(tmp_path, MINIMAL)
    assert "  local.mqtt_url: Value error, 'http://10.0.0.2': scheme must be" in (
        message
    )


def test_env_override_with_a_malformed_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cloud = "..."`` (a string, not a table) is a config error, env or not."""
    monkeypatch.setenv("FUSEBOX_CLOUD_MQTT_URL", "mqtt://broker:1883")
    message = _error(tmp_path, 'gateway_id = "gw-1"\ncloud = "mqtt://broker:1883"\n')
    assert "  cloud: Input should be a valid dictionary or instance of CloudLink" in (
        message
    )


def test_parse_config_from_a_dict() -> None:
    config = parse_config(
        {"gateway_id": "gw-1", "cloud": {"mqtt_url": "mqtt://h"}},
        source=Path("inline"),
    )
    assert config.cloud.mqtt_url == "mqtt://h"
    with pytest.raises(ConfigError, match=r"^inline: 1 problem\(s\)"):
        parse_config({"cloud": {"mqtt_url": "mqtt://h"}}, source=Path("inline"))


# ------------------------------------------------------------------ the command


def _fusebox(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FUSEBOX_CLOUD_MQTT_URL", "FUSEBOX_LOCAL_MQTT_URL")
    }
    env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "fusebox", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout(60),
        check=False,
    )


def test_edge_check_bad_config_exits_2(tmp_path: Path) -> None:
    bad = _write(tmp_path, MINIMAL + "[outbox]\ncap_mb = -1\n", name="bad.toml")
    result = _fusebox("edge", "check", "--config", str(bad), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert f"fusebox edge: {bad}: 1 problem(s) in the edge config" in result.stderr
    assert "outbox.cap_mb: Input should be greater than 0" in result.stderr


def test_edge_check_missing_file_exits_2(tmp_path: Path) -> None:
    result = _fusebox("edge", "check", "--config", "missing.toml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "missing.toml: cannot read the edge config" in result.stderr


def test_edge_init_writes_a_config_that_check_accepts(tmp_path: Path) -> None:
    out = tmp_path / "conf" / "x.toml"
    result = _fusebox("edge", "init", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    broker = out.with_name("mosquitto-site.conf")
    assert out.read_text() == starter_config(broker_config=str(broker))
    assert "autosave_on_changes true" in broker.read_text()

    result = _fusebox("edge", "check", "--config", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{out}: ok (gateway gw-site-1, 3 meter(s))"

    # init refuses to overwrite without --force
    out.write_text("# mine\n")
    result = _fusebox("edge", "init", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2
    assert "exists; use --force to overwrite" in result.stderr
    assert out.read_text() == "# mine\n"

    result = _fusebox(
        "edge",
        "init",
        "--out",
        str(out),
        "--force",
        "--gateway-id",
        "gw-9",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text() == starter_config(
        gateway_id="gw-9", broker_config=str(broker)
    )

"""docker-compose.yml agrees with the real CLI and the real edge config loader.

No Docker engine is needed: every Fusebox service's ``command`` is parsed by
``fusebox.cli.build_parser`` (the image's entrypoint ``fusebox`` is implied), the
cloud services' settings are validated with their compose environment, the edge
config mounted into the ``edge`` service (deploy/edge.toml) is loaded with
``edge.config.load_config``, and ``docker-compose config -q`` runs if installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from edge.config import EdgeConfig, load_config
from fusebox.cli import _cloud_settings, build_parser, cmd_sim_meter
from fusebox.starter import DEMO_METERS

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
FUSEBOX_IMAGE_ENTRYPOINT = "fusebox"
ENV_OVERRIDES = ("FUSEBOX_CLOUD_MQTT_URL", "FUSEBOX_LOCAL_MQTT_URL")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return data


@pytest.fixture
def no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_OVERRIDES:
        monkeypatch.delenv(name, raising=False)


def _fusebox_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run the image built from ./Dockerfile."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def _argv(svc: dict[str, Any]) -> list[str]:
    command = svc["command"]
    # exec form only: a string would be split by the shell-less entrypoint anyway,
    # but a list leaves no doubt about quoting
    assert isinstance(command, list), "use the exec (list) form for command"
    return [str(part) for part in command]


def _parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _mounts(svc: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume entry, short or long syntax."""
    out: list[tuple[str, str]] = []
    for vol in svc.get("volumes", []):
        if isinstance(vol, dict):
            out.append((str(vol["source"]), str(vol["target"])))
        else:
            source, target = str(vol).split(":")[:2]
            out.append((source, target))
    return out


def _edge(compose: dict[str, Any]) -> dict[str, Any]:
    svc: dict[str, Any] = compose["services"]["edge"]
    return svc


def _edge_config_on_host(compose: dict[str, Any]) -> Path:
    args = _parse(_argv(_edge(compose)))
    for source, target in _mounts(_edge(compose)):
        if target == args.config:
            assert source.startswith("./"), "the edge config is a bind mount"
            return REPO_ROOT / source
    raise AssertionError(f"nothing is mounted at {args.config} in the edge service")


# ------------------------------------------------------------------ the services


def test_the_expected_services_exist(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "cloud-broker",
        "site-broker",
        "postgres",
        "migrate",
        "ingest",
        "api",
        "scheduler",
        "edge",
        "meter-glow",
        "meter-tasmota",
        "meter-shelly",
        # the clustered backbone (issue 11): three nats-server nodes and the
        # one-shot that creates the streams
        "nats-1",
        "nats-2",
        "nats-3",
        "backbone-streams",
    }
    assert set(_fusebox_services(compose)) == {
        "backbone-streams",
        "migrate",
        "ingest",
        "api",
        "scheduler",
        "edge",
        "meter-glow",
        "meter-tasmota",
        "meter-shelly",
    }


def test_fusebox_services_share_one_image(compose: dict[str, Any]) -> None:
    services = _fusebox_services(compose)
    assert len({svc["image"] for svc in services.values()}) == 1
    assert all(svc["build"] == "." for svc in services.values())
    dockerfile = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert f'ENTRYPOINT ["{FUSEBOX_IMAGE_ENTRYPOINT}"]' in dockerfile


@pytest.mark.parametrize(
    "service",
    [
        "migrate",
        "ingest",
        "api",
        "scheduler",
        "edge",
        "meter-glow",
        "meter-tasmota",
        "meter-shelly",
    ],
)
def test_command_is_accepted_by_the_cli(compose: dict[str, Any], service: str) -> None:
    argv = _argv(compose["services"][service])
    assert argv[0] != FUSEBOX_IMAGE_ENTRYPOINT, "the entrypoint is already fusebox"
    args = _parse(argv)  # argparse exits with status 2 on anything it rejects
    assert callable(args.func)


def test_cloud_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    migrate = _parse(_argv(services["migrate"]))
    ingest = _parse(_argv(services["ingest"]))
    api = _parse(_argv(services["api"]))

    assert (migrate.command, migrate.service) == ("cloud", "migrate")
    assert (ingest.command, ingest.service) == ("cloud", "ingest")
    assert (api.command, api.service) == ("cloud", "api")
    assert ingest.shared == "yes"
    assert ingest.mqtt_url == "mqtt://cloud-broker:1883"
    assert api.api_host == "0.0.0.0"
    assert api.api_port == 8080
    assert "8080:8080" in services["api"]["ports"]
    for args in (migrate, ingest, api):
        assert args.database_url.endswith("@postgres:5432/fusebox")


@pytest.mark.parametrize("service", ["migrate", "ingest", "api", "scheduler"])
def test_cloud_settings_are_valid_in_production(
    compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("FUSEBOX_"):
            monkeypatch.delenv(name)
    env = _environment(compose["services"][service])
    assert env["FUSEBOX_ENV"] == "production"
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    settings = _cloud_settings(_parse(_argv(compose["services"][service])))

    assert settings.env == "production"
    assert settings.database_url
    assert settings.cloud_mqtt_url == "mqtt://cloud-broker:1883"


def test_ingest_scales_out_after_migrate(compose: dict[str, Any]) -> None:
    ingest = compose["services"]["ingest"]
    replicas = ingest.get("deploy", {}).get("replicas", ingest.get("scale", 1))
    assert replicas >= 2
    assert "container_name" not in ingest  # would forbid replicas
    assert ingest["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"
    }
    assert "cloud-broker" in ingest["depends_on"]
    assert compose["services"]["migrate"]["restart"] == "no"


def test_brokers_and_postgres(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, conf in (
        ("cloud-broker", "mosquitto-cloud.conf"),
        ("site-broker", "mosquitto-site.conf"),
    ):
        svc = services[name]
        assert svc["image"] == "eclipse-mosquitto:2"
        mounts = dict((t, s) for s, t in _mounts(svc))
        assert mounts["/mosquitto/config/mosquitto.conf"] == f"./deploy/{conf}"
        assert "/mosquitto/data" in mounts
        text = (REPO_ROOT / "deploy" / conf).read_text(encoding="utf-8")
        lines = {line.strip() for line in text.splitlines()}
        assert "listener 1883" in lines
        assert "persistence true" in lines
        assert "persistence_location /mosquitto/data/" in lines
    assert services["postgres"]["image"] == "postgres:16"
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]


# ---------------------------------------------------------------------- the edge


def test_edge_config_loads(compose: dict[str, Any], no_env_overrides: None) -> None:
    config = load_config(_edge_config_on_host(compose))

    assert isinstance(config, EdgeConfig)
    assert config.cloud.mqtt_url == "mqtt://cloud-broker:1883"
    assert config.local.mqtt_url == "mqtt://site-broker:1883"
    assert config.metrics.listen == "0.0.0.0:9108"


def test_edge_env_overrides_agree_with_the_file(
    compose: dict[str, Any], no_env_overrides: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_file = load_config(_edge_config_on_host(compose))
    env = _environment(_edge(compose))
    for name in ENV_OVERRIDES:
        monkeypatch.setenv(name, env[name])

    in_container = load_config(_edge_config_on_host(compose))

    assert in_container == from_file


def test_edge_outbox_is_on_a_named_volume(
    compose: dict[str, Any], no_env_overrides: None
) -> None:
    config = load_config(_edge_config_on_host(compose))
    outbox = PurePosixPath(str(config.outbox.path))
    assert outbox.is_absolute()
    named = [
        (source, target)
        for source, target in _mounts(_edge(compose))
        if source in (compose.get("volumes") or {})
    ]
    assert any(outbox.is_relative_to(target) for _source, target in named), named


def test_edge_healthcheck_uses_the_metrics_port(
    compose: dict[str, Any], no_env_overrides: None
) -> None:
    config = load_config(_edge_config_on_host(compose))
    assert config.metrics.listen is not None
    port = config.metrics.listen.rpartition(":")[2]
    test = " ".join(_edge(compose)["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/healthz" in test
    assert set(_edge(compose)["depends_on"]) >= {"cloud-broker", "site-broker"}


def test_every_simulated_meter_is_read_by_the_edge(
    compose: dict[str, Any], no_env_overrides: None
) -> None:
    config = load_config(_edge_config_on_host(compose))
    edge_meters = {(m.type, m.topic) for m in config.meters}
    topic_of = {(fmt, device): topic for _mid, fmt, topic, device in DEMO_METERS}
    seen = set()
    for name, svc in compose["services"].items():
        if not name.startswith("meter-"):
            continue
        args = _parse(_argv(svc))
        # `sim`'s subcommand dest and `--device` share the name "device", so the
        # subcommand is told by its handler
        assert args.func is cmd_sim_meter
        assert args.broker == "mqtt://site-broker:1883"
        key = (args.format, args.device)
        assert key in topic_of, f"{name}: no demo meter for {key}"
        assert (args.format, topic_of[key]) in edge_meters, name
        seen.add(key)
    assert seen == set(topic_of)


# ------------------------------------------------------------- docker-compose


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose is not on PATH"
)
def test_docker_compose_config_is_valid() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr

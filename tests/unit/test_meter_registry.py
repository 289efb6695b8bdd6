"""The registry of meter models and everything derived from it stay one.

``protocols.meters.METER_MODELS`` is the one list of meter models. These tests fail
when the edge's config schema, its driver factory, the fixture folders, the
simulator's formats or the README's table of models no longer match it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import aiomqtt
import pytest

from edge import ConfigError
from edge.config import EdgeConfig, parse_config
from edge.meters import meter_driver
from fusebox.docs import main as docs_main
from fusebox.docs import readme_meter_table, with_meter_table
from protocols.meters import (
    METER_MODELS,
    MeterFormat,
    MeterModel,
    MeterSettings,
    meter_models_markdown,
    meter_topic_filters,
)
from simulators.household import MeterSample, PhaseSample
from simulators.meter import SIM_METER_MODELS, MeterEncoder, sim_base_topic

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "meters"
NOW = datetime(2024, 5, 1, 18, 0, 5, tzinfo=UTC)
NAMES = list(METER_MODELS)


def _config(meters: list[dict[str, Any]]) -> EdgeConfig:
    return parse_config(
        {"gateway_id": "gw-1", "cloud": {"mqtt_url": "mqtt://h"}, "meters": meters},
        source=Path("edge.toml"),
    )


def _example(name: str, **keys: Any) -> dict[str, Any]:
    return {"type": name, "id": f"m-{name}", **METER_MODELS[name].example, **keys}


# --------------------------------------------------------------- names and schema


def test_every_format_has_one_model_under_its_own_name() -> None:
    assert list(MeterFormat) == NAMES
    assert all(name == model.type for name, model in METER_MODELS.items())


def test_config_union_is_the_registry() -> None:
    """The edge config's [[meters]] union has one member per model, tagged with the
    model's name, in registry order."""
    (table,) = get_args(EdgeConfig.model_fields["meters"].annotation)
    union, field_info = get_args(table)
    assert field_info.discriminator == "type"
    assert get_args(union) == tuple(m.settings for m in METER_MODELS.values())
    items = EdgeConfig.model_json_schema()["properties"]["meters"]["items"]
    assert set(items["discriminator"]["mapping"]) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_example_config_loads_as_the_models_class(name: str) -> None:
    (meter,) = _config([_example(name)]).meters
    assert type(meter) is METER_MODELS[name].settings
    assert isinstance(meter, MeterSettings)


def test_config_errors_name_every_model() -> None:
    with pytest.raises(ConfigError) as unknown:
        _config([{"type": "modbus", "id": "m", "topic": "x"}])
    with pytest.raises(ConfigError) as untyped:
        _config([{"id": "m", "topic": "x"}])
    assert f"-> use one of: {', '.join(NAMES)}" in str(unknown.value)
    quoted = " | ".join(f'"{name}"' for name in NAMES)
    assert f"-> add type = {quoted}" in str(untyped.value)


@pytest.mark.parametrize("name", NAMES)
def test_every_model_refuses_unknown_keys(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"meters\[0\]\.{name}\.topik: Extra"):
        _config([_example(name, topik="x")])


def test_a_bad_tasmota_timezone_is_a_config_error() -> None:
    """Refused when the config loads, not by every message the meter sends."""
    with pytest.raises(ConfigError) as info:
        _config([_example("tasmota", timezone="Mars/Base")])
    assert (
        "  meters[0].tasmota.timezone: Value error, unknown time zone 'Mars/Base'"
    ) in str(info.value)


def test_a_model_needs_a_literal_name() -> None:
    class Nameless(MeterSettings):
        type: str

    class TwoNames(MeterSettings):
        type: Literal["a", "b"]

    for settings in (Nameless, TwoNames):
        with pytest.raises(TypeError, match=r"type must be Literal\['<model name>'\]"):
            MeterModel(
                settings=settings,
                decode=METER_MODELS["glow"].decode,
                topic_filters=METER_MODELS["glow"].topic_filters,
                summary="",
                example={},
                fixtures="",
            )


# --------------------------------------------------------------- driver factory


@pytest.mark.parametrize("name", NAMES)
def test_driver_subscribes_to_the_models_topic_filters(name: str) -> None:
    (meter,) = _config([_example(name)]).meters
    driver = meter_driver(meter)
    assert driver.id == f"m-{name}"
    assert driver.filters == list(meter_topic_filters(name, meter.topic))


def test_driver_refuses_a_topic_its_model_cannot_use() -> None:
    (meter,) = _config([_example("glow", topic="glow/+")]).meters
    with pytest.raises(ValueError, match="must not contain wildcards"):
        meter_driver(meter)


def test_a_generic_topic_is_subscribed_as_given() -> None:
    (meter,) = _config([_example("generic", topic="site/+/p1")]).meters
    assert meter_driver(meter).filters == ["site/+/p1"]


# ---------------------------------------------------------- fixtures, simulator


def test_fixture_folders_are_the_registry() -> None:
    folders = {path.name for path in FIXTURES.iterdir() if path.is_dir()}
    assert folders == {model.fixtures for model in METER_MODELS.values()}
    for model in METER_MODELS.values():
        names = [path.name for path in (FIXTURES / model.fixtures).glob("*.json")]
        assert any(n.startswith("bad_") for n in names), model.fixtures
        assert any(not n.startswith("bad_") for n in names), model.fixtures


def test_simulated_formats_are_registered() -> None:
    assert set(SIM_METER_MODELS) <= set(METER_MODELS)


def _sample(phase_count: int) -> MeterSample:
    phase = PhaseSample(
        power_w=1200.0 / phase_count,
        voltage_v=231.0,
        current_a=5.2,
        import_energy_wh=1_000_000.0 / phase_count,
    )
    return MeterSample(
        ts=datetime(2024, 5, 1, 18, 0, tzinfo=UTC),
        import_energy_wh=1_000_000.0,
        export_energy_wh=0.0,
        power_w=1200.0,
        frequency_hz=50.0,
        phases=(phase,) * phase_count,
    )


@pytest.mark.parametrize("phase_count", [1, 3])
@pytest.mark.parametrize("name", list(SIM_METER_MODELS))
def test_a_simulated_meter_feeds_its_edge_driver(name: str, phase_count: int) -> None:
    """What the simulator publishes reaches the driver the edge builds for the
    model's example config, and decodes to the sample's register and power."""
    (meter,) = _config([_example(name, topic=sim_base_topic(name, "sim-1"))]).meters
    driver = meter_driver(meter)
    topic, payload = MeterEncoder(name, "sim-1").encode(_sample(phase_count))

    assert driver.wants(aiomqtt.Topic(topic))
    readings = {r.quantity: r.value for r in driver.decode(topic, payload, NOW)}
    assert readings["import_energy_wh"] == 1_000_000.0
    assert readings["power_w"] == 1200.0


# ------------------------------------------------------------------------ docs


def test_readme_meter_table_is_generated() -> None:
    """Run ``python -m fusebox.docs --write`` when this fails."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_meter_table(readme) == meter_models_markdown()


def test_the_table_has_a_row_per_model() -> None:
    rows = meter_models_markdown().splitlines()[3:-1]  # marker, header, rule; marker
    assert [row.split("`")[1] for row in rows] == NAMES


def test_docs_command_checks_and_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "README.md"
    stale = meter_models_markdown().replace("| `glow` |", "| `glow` | old |")
    readme.write_text(f"# title\n\n{stale}\nmore\n")

    assert docs_main(["--readme", str(readme)]) == 1
    assert "differs; run with --write" in capsys.readouterr().err
    assert docs_main(["--readme", str(readme), "--write"]) == 0
    assert readme.read_text() == f"# title\n\n{meter_models_markdown()}\nmore\n"
    assert docs_main(["--readme", str(readme)]) == 0
    assert with_meter_table(readme.read_text()) == readme.read_text()


def test_docs_command_needs_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no table\n")
    with pytest.raises(ValueError, match="no meter table"):
        docs_main(["--readme", str(readme)])

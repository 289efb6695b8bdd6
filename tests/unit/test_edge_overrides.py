"""``load_config`` returns the config in force: the TOML file with the
installer's overrides (set on the local page, kept beside the outbox) on top."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge import ConfigError
from edge.config import load_config
from edge.overrides import Overrides, apply_overrides
from edge.paths import StatePaths
from fusebox import cli

CHARGER_PASSWORD = "charger-password-16"
APPROVED_PASSWORD = "a-new-charger-pass"


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FUSEBOX_CLOUD_MQTT_URL", raising=False)
    monkeypatch.delenv("FUSEBOX_LOCAL_MQTT_URL", raising=False)


def _toml(tmp_path: Path) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(
        'gateway_id = "gw-o"\n'
        "[cloud]\n"
        'mqtt_url = "mqtt://127.0.0.1:1"\n'
        "[outbox]\n"
        f'path = "{tmp_path / "outbox.db"}"\n'
        "[site]\n"
        "main_fuse_a = 60\n"
        "[[chargers]]\n"
        'id = "CP1"\n'
        f'password = "{CHARGER_PASSWORD}"\n'
    )
    return path


def _overrides(tmp_path: Path, doc: object) -> Path:
    path = StatePaths.beside(tmp_path / "outbox.db").overrides
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_no_overrides_file_is_the_file_alone(tmp_path: Path) -> None:
    toml = _toml(tmp_path)
    assert load_config(toml) == load_config(toml, overrides=False)
    assert load_config(toml).site.main_fuse_a == 60


def test_the_fuse_and_approved_chargers_are_in_force(tmp_path: Path) -> None:
    toml = _toml(tmp_path)
    _overrides(
        tmp_path,
        {
            "version": 1,
            "main_fuse_a": 45,
            "chargers": [
                {"id": "NEW-1", "password": APPROVED_PASSWORD, "max_current_a": 16},
                # the config file names CP1 itself: its own entry wins
                {"id": "CP1", "password": APPROVED_PASSWORD, "max_current_a": 10},
            ],
        },
    )
    config = load_config(toml)
    assert config.site.main_fuse_a == 45
    assert [c.id for c in config.chargers] == ["CP1", "NEW-1"]
    cp1, new = config.chargers
    assert cp1.password is not None
    assert cp1.password.get_secret_value() == CHARGER_PASSWORD
    assert new.max_current_a == 16

    alone = load_config(toml, overrides=False)
    assert alone.site.main_fuse_a == 60
    assert [c.id for c in alone.chargers] == ["CP1"]
    # what the agent gets from parse_config or load_config is the same config
    assert apply_overrides(alone) == config


def test_applying_twice_changes_nothing(tmp_path: Path) -> None:
    toml = _toml(tmp_path)
    path = _overrides(
        tmp_path,
        {"main_fuse_a": 40, "chargers": [{"id": "N2", "password": APPROVED_PASSWORD}]},
    )
    config = load_config(toml)
    assert Overrides(path).apply(config) is config


def test_overrides_written_on_the_page_are_read_back(tmp_path: Path) -> None:
    toml = _toml(tmp_path)
    overrides = Overrides(StatePaths.beside(tmp_path / "outbox.db").overrides)
    overrides.set_main_fuse(32)
    assert load_config(toml).site.main_fuse_a == 32


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "not a valid overrides file"),
        ('{"version": 1, "main_fuse_a": -5}', "main_fuse_a"),
        ('{"version": 2}', "version"),
        (b"\xff\xfe", "cannot read"),
    ],
)
def test_a_damaged_overrides_file_is_a_config_error(
    tmp_path: Path, content: str | bytes, says: str
) -> None:
    toml = _toml(tmp_path)
    path = StatePaths.beside(tmp_path / "outbox.db").overrides
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ConfigError, match="delete it") as refused:
        load_config(toml)
    assert str(path) in str(refused.value) and says in str(refused.value)
    # finding the running edge does not depend on it
    assert load_config(toml, overrides=False).gateway_id == "gw-o"


def test_edge_check_shows_the_config_in_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = _toml(tmp_path)
    assert cli.main(["edge", "check", "--config", str(toml)]) == 0
    out = capsys.readouterr().out
    assert out == f"{toml}: ok (gateway gw-o, 0 meter(s))\n"

    path = _overrides(
        tmp_path,
        {"main_fuse_a": 45, "chargers": [{"id": "N1", "password": APPROVED_PASSWORD}]},
    )
    assert cli.main(["edge", "check", "--config", str(toml)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{toml}: ok (gateway gw-o, 0 meter(s))\n")
    assert "main fuse 45 A" in out and "N1" in out and str(path) in out


def test_edge_check_refuses_a_damaged_overrides_file_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = _toml(tmp_path)
    _overrides(tmp_path, "{not json")
    assert cli.main(["edge", "check", "--config", str(toml)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "fusebox edge: " in captured.err and "overrides" in captured.err

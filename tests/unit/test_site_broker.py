"""The site broker's config: what ``fusebox edge init`` writes, what the deploy
config ships, and what the edge tells the installer a given config promises."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from edge.config import load_config
from edge.site_broker import (
    Durability,
    parse_durability,
    read_durability,
    site_broker_config,
)
from fusebox.cli import build_parser, cmd_edge_init

DEPLOY_SITE_CONF = Path(__file__).resolve().parents[2] / "deploy/mosquitto-site.conf"


def test_the_deploy_config_and_edge_init_save_every_reading() -> None:
    shipped = parse_durability(DEPLOY_SITE_CONF.read_text(encoding="utf-8"))
    written = parse_durability(site_broker_config(persistence_location="/data"))
    assert shipped == written
    assert shipped.every_message
    assert shipped.max_queued_messages == 100_000


@pytest.mark.parametrize(
    ("text", "every", "summary"),
    [
        ("", False, "no persistence"),
        ("persistence true\n", False, "every 1800 s"),
        ("persistence true\nautosave_interval 30\n", False, "every 30 s"),
        ("persistence true\nautosave_interval 0\n", False, "only at shutdown"),
        (
            "persistence true\nautosave_on_changes true\nautosave_interval 100\n",
            False,
            "up to 99 queued readings",
        ),
        (
            "# comment\npersistence true\nautosave_on_changes true\n"
            "autosave_interval 5\nautosave_interval 1\n",
            True,
            "saves every reading",
        ),
    ],
)
def test_what_a_config_promises(text: str, every: bool, summary: str) -> None:
    d = parse_durability(text)
    assert d.every_message is every
    assert summary in d.summary


def test_a_config_it_cannot_judge_says_so(tmp_path: Path) -> None:
    missing = read_durability(tmp_path / "nope.conf")
    assert isinstance(missing, str) and missing.startswith("unknown: cannot read")
    bad = tmp_path / "bad.conf"
    bad.write_text("persistence yes\n")
    assert "persistence 'yes'" in str(read_durability(bad))
    included = tmp_path / "main.conf"
    included.write_text("persistence true\ninclude_dir /etc/mosquitto/conf.d\n")
    assert "include_dir" in str(read_durability(included))
    good = tmp_path / "good.conf"
    good.write_text(site_broker_config(persistence_location="/d"))
    assert read_durability(good) == Durability(
        persistence=True,
        autosave_on_changes=True,
        autosave_interval=1,
        max_queued_messages=100_000,
    )


def _init(argv: list[str]) -> int:
    args: argparse.Namespace = build_parser().parse_args(["edge", "init", *argv])
    return cmd_edge_init(args)


def test_edge_init_writes_the_site_broker_config_beside_the_edge_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FUSEBOX_LOCAL_MQTT_URL", raising=False)
    out = tmp_path / "site" / "edge.toml"
    data = tmp_path / "broker-data"
    assert _init(["--out", str(out), "--site-broker-data", str(data)]) == 0
    broker = out.with_name("mosquitto-site.conf")
    config = load_config(out)
    assert config.local.broker_config == broker
    assert config.local.reconnect_max_s == 1
    text = broker.read_text()
    assert f"persistence_location {data}/" in text
    # the broker listens where the edge config looks for it
    assert f"listener {config.local.mqtt_url.rsplit(':', 1)[1]}" in text
    d = read_durability(broker)
    assert isinstance(d, Durability) and d.every_message
    # neither file is overwritten without --force
    broker.write_text("persistence false\n")
    assert (
        _init(
            ["--out", str(tmp_path / "other.toml"), "--site-broker-conf", str(broker)]
        )
        == 2
    )
    assert broker.read_text() == "persistence false\n"
    assert _init(["--out", str(out), "--force"]) == 0
    assert read_durability(broker) == d

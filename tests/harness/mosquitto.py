"""A private Mosquitto per test: the ``mosquitto`` and ``mosquitto2`` fixtures.

Each server has its own free port on 127.0.0.1, its config, persistence and log in a
tmp dir, and keeps its port across :meth:`~MosquittoServer.restart`. Persistence is on
(saved every second and at SIGTERM), so a restart keeps retained messages, persistent
sessions and their queued QoS 1 messages like a real deployment; ``kill()`` is a crash.

Use ``mosquitto.url`` (``mqtt://127.0.0.1:PORT``) for clients; ``mosquitto2`` is an
independent second broker for tests that need a site broker and a cloud broker. When a
test fails, look at ``mosquitto.log_tail()`` (or the log under the tmp dir).

``use_settings_of()`` swaps the 1 s autosave for the shipped site broker's settings
(save on every change), for tests of what a broker crash loses.

Like every broker Fusebox ships, it refuses packets over a size limit
(``max_packet_size``): the cloud broker's (``CLOUD_MAX_PACKET_BYTES``) unless
``max_packet_size`` is given, or the site broker's after ``use_settings_of()``.

For a broker with authentication, pass ``extra_conf`` (lines appended to the generated
config; a later ``allow_anonymous false`` wins) or use :func:`dynsec_server`, which
loads Mosquitto's dynamic security plugin with one admin account.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from edge.site_broker import mosquitto_settings, parse_durability
from fusebox.embedded import MosquittoProcess
from protocols.broker_limits import CLOUD_MAX_PACKET_BYTES
from tests.harness.timing import timeout

# the site broker config docker-compose.yml runs (the one `fusebox edge init` writes
# has the same settings)
SHIPPED_SITE_CONF = Path(__file__).resolve().parents[2] / "deploy/mosquitto-site.conf"

__all__ = [
    "SHIPPED_SITE_CONF",
    "MosquittoServer",
    "dynsec_server",
    "mosquitto",
    "mosquitto2",
]


class MosquittoServer(MosquittoProcess):
    """Mosquitto for tests: deep queues, 1 s autosave, start timeout in test units.

    ``MosquittoServer(state_dir).start()``; then ``stop()``, ``kill()`` (SIGKILL),
    ``restart()`` (same port), ``url``, ``port``, ``log_tail(n)``. Raises
    ``MosquittoNotFoundError`` saying to ``apt-get install mosquitto`` if it is missing.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int | None = None,
        extra_conf: Sequence[str] = (),
        max_packet_size: int = CLOUD_MAX_PACKET_BYTES,
    ) -> None:
        super().__init__(
            state_dir=state_dir,
            host="127.0.0.1",
            port=port,
            autosave_interval_s=1,
            max_queued_messages=1_000_000,
            max_inflight_messages=100,
            max_packet_size=max_packet_size,
            start_timeout_s=timeout(10),
        )
        self.extra_conf = tuple(extra_conf)

    def _write_conf(self, port: int) -> None:
        super()._write_conf(port)
        if self.extra_conf:
            with self.conf_path.open("a") as conf:
                conf.write("\n".join(self.extra_conf) + "\n")

    def use_settings_of(self, conf: Path = SHIPPED_SITE_CONF) -> None:
        """Take the persistence, queue and packet size settings of the Mosquitto
        config ``conf`` (the shipped site broker's by default) instead of the 1 s
        autosave, from the next (re)start on. Listener, paths and logging stay the
        harness's own."""
        values = mosquitto_settings(conf.read_text(encoding="utf-8"))
        durability = parse_durability(conf.read_text(encoding="utf-8"))
        assert durability.persistence, f"{conf} has no persistence"
        self.autosave_on_changes = durability.autosave_on_changes
        self.autosave_interval_s = durability.autosave_interval
        self.max_queued_messages = durability.max_queued_messages
        self.max_inflight_messages = int(values.get("max_inflight_messages", 20))
        self.max_packet_size = int(values["max_packet_size"])

    @property
    def mqtt_port(self) -> int:
        """The port as an ``int`` (``port`` is ``None`` only before the first start)."""
        return self._require_port()


def dynsec_server(
    state_dir: Path, admin_username: str, admin_password: str
) -> MosquittoServer:
    """A (not yet started) Mosquitto with the dynamic security plugin and no anonymous
    access; its plugin file holds one admin account (``cloud.broker_auth``).

    Skips the test when the plugin is not installed (Debian's ``mosquitto`` has it).
    """
    from cloud.broker_auth import find_dynsec_plugin, write_dynsec_config

    plugin = find_dynsec_plugin()
    if plugin is None:
        pytest.skip("mosquitto_dynamic_security.so is not installed")
    state_dir.mkdir(parents=True, exist_ok=True)
    config = write_dynsec_config(
        state_dir / "dynamic-security.json", admin_username, admin_password
    )
    return MosquittoServer(
        state_dir,
        extra_conf=[
            "allow_anonymous false",
            f"plugin {plugin}",
            f"plugin_opt_config_file {config}",
        ],
    )


def _serve(
    tmp_path_factory: pytest.TempPathFactory, name: str
) -> Iterator[MosquittoServer]:
    server = MosquittoServer(tmp_path_factory.mktemp(name)).start()
    try:
        yield server
    finally:
        server.stop(timeout_s=timeout(5))


@pytest.fixture
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    """A started private Mosquitto, stopped at teardown."""
    yield from _serve(tmp_path_factory, "mosquitto")


@pytest.fixture
def mosquitto2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    """A second, independent Mosquitto (e.g. the cloud broker next to a site broker)."""
    yield from _serve(tmp_path_factory, "mosquitto2")

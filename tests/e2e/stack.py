"""The whole reading path as real processes, for end-to-end fault tests.

    meters (fusebox sim meter, --ledger) -> site Mosquitto -> fusebox edge run
      -> cloud Mosquitto -> fusebox cloud ingest (one or more) -> PostgreSQL

``Stack.reconcile()`` compares every meter's ledger (what the broker acknowledged
from the meter) against the cloud's rows: each ledgered reading must be stored
exactly once, with its exact value, and nothing else may be there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from edge.metrics import parse_lines
from simulators.meter import read_ledger, sim_base_topic
from tests.harness.mosquitto import MosquittoServer
from tests.harness.procs import Proc, Procs
from tests.harness.timing import eventually, timeout

GATEWAY = "gw-e2e"
_DATA = Path(__file__).resolve().parents[2] / "fusebox" / "data"
SAMPLE_PRICES = _DATA / "sample_prices_2025.csv"
SAMPLE_CARBON = _DATA / "sample_carbon_2025.csv"


@dataclass
class Reconciliation:
    ledgered: int = 0
    stored: int = 0
    missing: list[tuple[str, int, float]] = field(default_factory=list)
    duplicated: list[tuple[str, int]] = field(default_factory=list)
    wrong_value: list[tuple[str, int, float, float]] = field(default_factory=list)
    unexpected: list[tuple[str, int]] = field(default_factory=list)
    power_rows: int = 0

    @property
    def exact(self) -> bool:
        return (
            not self.missing
            and not self.duplicated
            and not self.wrong_value
            and not self.unexpected
            and self.power_rows == self.ledgered
        )

    def __str__(self) -> str:
        return (
            f"ledgered {self.ledgered}, stored {self.stored}, power rows "
            f"{self.power_rows}, missing {len(self.missing)} {self.missing[:3]}, "
            f"duplicated {len(self.duplicated)} {self.duplicated[:3]}, wrong value "
            f"{len(self.wrong_value)} {self.wrong_value[:3]}, unexpected "
            f"{len(self.unexpected)} {self.unexpected[:3]}"
        )


@dataclass
class Meter:
    device: str
    format: str
    ledger: Path
    proc: Proc | None = None


class Stack:
    def __init__(
        self,
        *,
        procs: Procs,
        site: MosquittoServer,
        cloud: MosquittoServer,
        dsn: str,
        work: Path,
        metrics_port: int,
    ) -> None:
        self.procs = procs
        self.site = site
        self.cloud = cloud
        self.dsn = dsn
        self.work = work
        self.metrics_port = metrics_port
        self.meters: dict[str, Meter] = {}
        self.edge_config = work / "edge.toml"

    # ------------------------------------------------------------------ processes

    def ship_site_broker(self) -> None:
        """Restart the site broker with the shipped deploy/mosquitto-site.conf
        persistence settings (save on every change) instead of the harness's 1 s
        autosave; call before starting anything that connects to it."""
        self.site.use_settings_of()
        self.site.restart()

    def ingest(self, name: str = "ingest-1", *, dsn: str | None = None) -> Proc:
        return self.procs.start(
            [
                "fusebox",
                "cloud",
                "ingest",
                "--database-url",
                dsn or self.dsn,
                "--mqtt-url",
                self.cloud.url,
                "--shared",
                "yes",
            ],
            name=name,
        )

    def add_meter(self, fmt: str, device: str) -> Meter:
        ledger = self.work / f"ledger-{device}.jsonl"
        m = Meter(device=device, format=fmt, ledger=ledger)
        self.meters[device] = m
        return m

    def write_edge_config(
        self, *, ack_timeout_s: float = 3, cap_mb: float = 64
    ) -> Path:
        meters = "\n".join(
            f'[[meters]]\ntype = "{m.format}"\nid = "{m.device}"\n'
            f'topic = "{sim_base_topic(m.format, m.device)}"\n'
            for m in self.meters.values()
        )
        self.edge_config.write_text(
            f"""gateway_id = "{GATEWAY}"
[cloud]
mqtt_url = "{self.cloud.url}"
[local]
mqtt_url = "{self.site.url}"
[outbox]
path = "{self.work / "outbox.db"}"
cap_mb = {cap_mb}
[uplink]
batch_max_records = 500
window = 4
ack_timeout_s = {ack_timeout_s}
retry_base_s = 0.2
retry_cap_s = 3
status_interval_s = 1
[metrics]
listen = "127.0.0.1:{self.metrics_port}"
{meters}"""
        )
        return self.edge_config

    def add_ocpp_charger(
        self, *, port: int, charger: str, password: str, id_tag: str
    ) -> None:
        """Append an OCPP server on ``port`` with one charger to the edge config.
        No plan and no site meter: the controller lets it charge at the safe
        current all day (the default window covers every hour)."""
        self.edge_config.write_text(
            self.edge_config.read_text()
            + f'\n[ocpp]\nport = {port}\nid_tags = ["{id_tag}"]\n\n'
            f'[[chargers]]\nid = "{charger}"\npassword = "{password}"\nphases = 3\n'
            '\n[site]\ndefault_window = "00:00-00:00"\nrandom_delay_max_s = 0\n'
        )

    def start_scenario_charger(
        self,
        *,
        url: str,
        charger: str,
        password: str,
        version: str,
        scenario: list[dict[str, Any]],
        extra: tuple[str, ...] = (),
    ) -> tuple[Proc, Path, Path]:
        """``fusebox sim charger`` playing ``scenario`` at 60x, meter values every
        second, with the ``extra`` flags (``--quirks``); returns the process, its
        ledger and its state file."""
        (self.work / "scenario.json").write_text(json.dumps(scenario))
        ledger = self.work / "charger-ledger.jsonl"
        state = self.work / "charger-state.json"
        sim = self.procs.start(
            [
                "fusebox",
                "sim",
                "charger",
                "--url",
                url,
                "--id",
                charger,
                "--password",
                password,
                "--ocpp",
                version,
                "--scenario",
                str(self.work / "scenario.json"),
                "--ledger",
                str(ledger),
                "--state",
                str(state),
                "--meter-interval",
                "1",
                "--speed",
                "60",
                "--max-backoff",
                "2",
                *extra,
            ],
            name="charger",
        )
        return sim, ledger, state

    def edge(self, name: str = "edge") -> Proc:
        if not self.edge_config.exists():
            self.write_edge_config()
        return self.procs.start(
            ["fusebox", "edge", "run", "--config", str(self.edge_config)], name=name
        )

    async def edge_ready(self) -> None:
        """Wait until the edge is subscribed on the site broker: readings published
        before its first subscription have no session to be queued in."""

        def subscribed() -> bool:
            return self.metrics().get("fusebox_meters_connected") == 1.0

        await eventually(subscribed, timeout_s=timeout(30), message="edge subscribed")

    def _run_meter(self, device: str, *flags: str) -> Proc:
        """``fusebox sim meter`` for ``device`` on the site broker, with its ledger
        and ``flags``."""
        m = self.meters[device]
        argv = [
            "fusebox",
            "sim",
            "meter",
            "--broker",
            self.site.url,
            "--format",
            m.format,
            "--device",
            device,
            "--ledger",
            str(m.ledger),
            "--max-backoff",
            "1",
            "--log-every",
            "5",
            *flags,
        ]
        m.proc = self.procs.start(argv, name=f"meter-{device}")
        return m.proc

    def start_meter(
        self, device: str, *, count: int, interval_s: float = 0.05, resume: bool = False
    ) -> Proc:
        flags = ["--interval", str(interval_s), "--step", "10", "--count", str(count)]
        if resume:
            flags.append("--resume-ledger")
        return self._run_meter(device, *flags)

    async def wait_meters_done(self, timeout_s: float) -> None:
        for m in self.meters.values():
            assert m.proc is not None
            code = await m.proc.wait_async(timeout_s=timeout_s)
            assert code == 0, f"meter {m.device} exited {code}:\n{m.proc.log_tail(20)}"

    # ------------------------------------------- smart charging on a shared clock

    def scheduler(
        self,
        *,
        clock: str,
        name: str = "scheduler",
        env: dict[str, str] | None = None,
    ) -> Proc:
        """``fusebox cloud scheduler`` on ``clock`` (a ``protocols.clock`` spec);
        ``env`` adds ``FUSEBOX_SCHEDULER_*`` settings."""
        return self.procs.start(
            [
                "fusebox",
                "cloud",
                "scheduler",
                "--database-url",
                self.dsn,
                "--mqtt-url",
                self.cloud.url,
                "--clock",
                clock,
            ],
            name=name,
            env=env,
        )

    def load_prices(
        self,
        *,
        tariff: str = "default",
        csv: Path = SAMPLE_PRICES,
        carbon_csv: Path | None = SAMPLE_CARBON,
    ) -> None:
        """``fusebox cloud prices load`` (the sample year by default), to the end."""
        argv = [
            "fusebox",
            "cloud",
            "prices",
            "load",
            "--tariff",
            tariff,
            "--csv",
            str(csv),
            "--database-url",
            self.dsn,
        ]
        if carbon_csv is not None:
            argv += ["--carbon-csv", str(carbon_csv)]
        proc = self.procs.start(argv, name=f"prices-{tariff}")
        code = proc.wait(timeout_s=timeout(60))
        assert code == 0, f"prices load exited {code}:\n{proc.log_tail(20)}"

    def edge_on(
        self,
        *,
        clock: str,
        cloud_url: str | None = None,
        name: str = "edge",
    ) -> Proc:
        """The edge on ``clock``; ``cloud_url`` replaces the cloud broker's URL (a
        ``TcpProxy``'s, to cut the link)."""
        if not self.edge_config.exists():
            self.write_edge_config()
        env = {"FUSEBOX_CLOCK": clock}
        if cloud_url is not None:
            env["FUSEBOX_CLOUD_MQTT_URL"] = cloud_url
        return self.procs.start(
            ["fusebox", "edge", "run", "--config", str(self.edge_config)],
            name=name,
            env=env,
        )

    def start_clock_meter(
        self,
        device: str,
        *,
        clock: str,
        interval_s: float = 60.0,
        extra: list[str] | None = None,
    ) -> Proc:
        """A meter on the simulated ``clock``: a reading every ``interval_s``
        simulated seconds, with its ledger; ``extra`` flags such as
        ``--add-load-file``."""
        return self._run_meter(
            device, "--clock", clock, "--interval", str(interval_s), *(extra or [])
        )

    # ------------------------------------------------------------------ observing

    def ledger_count(self) -> int:
        return sum(
            sum(1 for _ in read_ledger(m.ledger))
            for m in self.meters.values()
            if m.ledger.exists()
        )

    async def stored_count(self) -> int:
        conn = await asyncpg.connect(self.dsn)
        try:
            n: int = await conn.fetchval(
                "SELECT count(*) FROM readings_v WHERE gateway_id = $1 "
                "AND quantity = 'import_energy_wh'",
                GATEWAY,
            )
            return n
        except asyncpg.UndefinedTableError:
            return 0
        finally:
            await conn.close()

    def metrics(self) -> dict[str, float]:
        """The edge's Prometheus samples, ``name{labels}`` -> value."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        return parse_lines(text)

    async def reconcile(self) -> Reconciliation:
        expected: dict[tuple[str, int], float] = {}
        for m in self.meters.values():
            if m.ledger.exists():
                for e in read_ledger(m.ledger):
                    key = (m.device, int(e.ts.timestamp() * 1000))
                    expected[key] = e.import_energy_wh
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch(
                "SELECT device_id, (extract(epoch FROM ts) * 1000)::bigint AS ts_ms,"
                " value, quantity FROM readings_v WHERE gateway_id = $1"
                " AND quantity IN ('import_energy_wh', 'power_w')",
                GATEWAY,
            )
        finally:
            await conn.close()
        rec = Reconciliation(ledgered=len(expected))
        seen: Counter[tuple[str, int]] = Counter()
        for r in rows:
            if r["quantity"] == "power_w":
                rec.power_rows += 1
                continue
            key = (r["device_id"], r["ts_ms"])
            seen[key] += 1
            rec.stored += 1
            if key not in expected:
                rec.unexpected.append(key)
            elif r["value"] != expected[key]:
                rec.wrong_value.append((*key, r["value"], expected[key]))
        for key, value in expected.items():
            if seen[key] == 0:
                rec.missing.append((*key, value))
            elif seen[key] > 1:
                rec.duplicated.append(key)
        return rec

    async def wait_reconciled(
        self, timeout_s: float, *, power_complete: bool = True
    ) -> Reconciliation:
        """Wait until every ledgered reading is stored (and, with ``power_complete``,
        a power sample for each), then reconcile once more after a pause."""
        last: list[Reconciliation] = []

        async def complete() -> bool:
            rec = await self.reconcile()
            last[:] = [rec]
            power_ok = rec.power_rows >= rec.ledgered or not power_complete
            return not rec.missing and power_ok

        with contextlib.suppress(AssertionError):
            await eventually(
                complete,
                timeout_s=timeout_s,
                interval_s=0.5,
                message="all ledgered readings stored",
            )
        rec = last[0] if last else await self.reconcile()
        # settle: anything extra (a duplicate) would arrive right behind
        await asyncio.sleep(timeout(1))
        rec = await self.reconcile()
        return rec


def read_charger_ledger(path: Path) -> list[dict[str, Any]]:
    """A charger simulator's JSON-lines ledger (empty until it writes one)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]

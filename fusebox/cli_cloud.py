"""``fusebox cloud ...``: the handlers of the cloud commands.

Each builds :class:`cloud.settings.CloudSettings` from its flags (over the
environment) and runs its body with any missing server (PostgreSQL, the MQTT
broker) started embedded first. The parser is in :mod:`fusebox.cli`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusebox.cli_common import EXIT_BAD_CONFIG, clock_from_args, run_until_signalled

if TYPE_CHECKING:
    from protocols.clock import Clock

log = logging.getLogger("fusebox")


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
            "backbone_url": getattr(args, "backbone", None),
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
    """``fusebox cloud run|ingest|api|scheduler|migrate``: one service (or all) until
    a signal, with missing servers started embedded."""
    from cloud import run as cloud_run

    settings = _cloud_settings(args)
    clock = _clock(args)
    if args.service in ("run", "api"):
        _check_api_settings()

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

    # ingest on the backbone (FUSEBOX_BACKBONE_URL) needs no MQTT broker
    need_mqtt = args.service in ("run", "scheduler") or (
        args.service == "ingest" and not settings.backbone_url
    )
    return run_until_signalled(_with_embedded(settings, body, need_mqtt=need_mqtt))


def _check_api_settings() -> None:
    """Refuse to start the API on bad ``FUSEBOX_*`` API settings (a weak
    bootstrap operator password among them), saying what to change."""
    from pydantic import ValidationError

    from cloud.auth import ApiSettings

    try:
        ApiSettings()
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(x) for x in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            print(
                f"fusebox cloud: bad settings: {where + ': ' if where else ''}{msg}",
                file=sys.stderr,
            )
        raise SystemExit(EXIT_BAD_CONFIG) from None


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
    from cloud.passwords import WeakPassword, check_password

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.email}: ")
        if password != getpass.getpass("again: "):
            print("fusebox cloud user add: the passwords differ", file=sys.stderr)
            return EXIT_BAD_CONFIG
    if "@" not in args.email or len(args.email) > 254:
        print(f"fusebox cloud user add: bad e-mail {args.email!r}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    try:
        check_password(password, email=args.email)
    except WeakPassword as exc:
        print(f"fusebox cloud user add: {exc}", file=sys.stderr)
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


def _backbone_users(gateways: list[str]) -> tuple[list[Any], dict[str, str]]:
    """Users for ``fusebox cloud backbone --gateway ...``: one per gateway and an
    admin, with fresh passwords (returned in clear once, stored hashed)."""
    from cloud.backbone.accounts import (
        ADMIN_USER,
        admin_user,
        gateway_user,
        hash_password,
        new_password,
    )

    if not gateways:
        return [], {}
    clear = {ADMIN_USER: new_password()}
    users = [admin_user(hash_password(clear[ADMIN_USER]))]
    for gateway_id in gateways:
        clear[f"gw-{gateway_id}"] = new_password()
        users.append(gateway_user(gateway_id, hash_password(clear[f"gw-{gateway_id}"])))
    return users, clear


def _print_backbone(cluster: Any, clear: dict[str, str], elapsed_s: float) -> None:
    n = len(cluster.nodes)
    print(f"backbone: {n} nats-server node(s) ready in {elapsed_s:.1f} s")
    for node in cluster.nodes:
        spec = node.spec
        print(
            f"  {spec.name}: NATS {spec.nats_url}  MQTT {spec.mqtt_url}  "
            f"monitor {spec.monitor_url}  data {node.node_dir}"
        )
    print("  streams: FUSEBOX_UP (fusebox.v1.gw.*.up.>), FUSEBOX_DEAD (fusebox.dead.>)")
    for user, password in clear.items():
        print(f"  user {user} password {password}")
    if not clear:
        print("  no authorization (loopback only): any client may connect")
    auth = ', username = "gw-<id>", password = "..."' if clear else ""
    print(
        f'  edge: in its config [cloud] set mqtt_url = "{cluster.mqtt_urls[0]}"'
        f"{auth} (or env FUSEBOX_CLOUD_MQTT_URL); any node's MQTT URL works"
    )
    print("  Ctrl-C stops every node cleanly")


def _backbone_streams_only(args: argparse.Namespace) -> int:
    """``--streams-only``: create or update the streams on a running backbone."""
    from cloud.backbone.streams import ensure_streams

    if not args.nats_url:
        print(
            "fusebox cloud backbone: --streams-only needs --nats-url", file=sys.stderr
        )
        return EXIT_BAD_CONFIG
    urls = [url.strip() for url in args.nats_url.split(",") if url.strip()]
    names = asyncio.run(ensure_streams(urls, args.cluster, timeout_s=120.0))
    print(f"backbone streams ready at {','.join(urls)}: {', '.join(names)}")
    return 0


def cmd_cloud_backbone(args: argparse.Namespace) -> int:
    """``fusebox cloud backbone``: 1 or N nats-server nodes on loopback with
    JetStream and MQTT, the streams created; in the foreground until Ctrl-C, which
    stops every node cleanly. A node that exits on its own is started again."""
    import time

    from cloud.backbone.accounts import ADMIN_USER
    from cloud.backbone.cluster import BackboneCluster, BackboneStartError
    from cloud.backbone.streams import ensure_streams

    if args.cluster < 1:
        print("fusebox cloud backbone: --cluster must be >= 1", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if args.streams_only:
        return _backbone_streams_only(args)
    try:
        users, clear = _backbone_users(args.gateway or [])
        started_at = time.monotonic()
        cluster = BackboneCluster.create(
            Path(args.data_dir),
            nodes=args.cluster,
            users=users,
            base_port=args.port,
            die_with_parent=True,
        ).start()
    except (BackboneStartError, ValueError, RuntimeError) as exc:
        print(f"fusebox cloud backbone: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG

    async def main() -> None:
        try:
            user = ADMIN_USER if clear else None
            await ensure_streams(
                cluster.nats_urls[0],
                args.cluster,
                user=user,
                password=clear.get(ADMIN_USER),
            )
            _print_backbone(cluster, clear, time.monotonic() - started_at)
            while True:
                await asyncio.sleep(1.0)
                for index, node in enumerate(cluster.nodes):
                    if not node.is_running:
                        log.warning(
                            "nats-server %s exited; starting it again. log tail:\n%s",
                            node.spec.name,
                            node.log_tail(10),
                        )
                        # in this (the main) thread: a node dies with the thread
                        # that started it (die_with_parent)
                        cluster.start_node(index)
        finally:
            await asyncio.to_thread(cluster.stop)
            print("backbone: stopped")

    return run_until_signalled(main, grace_s=20.0, force_s=30.0)

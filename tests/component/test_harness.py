"""The test harness itself: real Mosquitto, real PostgreSQL, the TCP proxy, Proc."""

from __future__ import annotations

import asyncio
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import aiomqtt
import asyncpg
import pytest

from tests.harness.mosquitto import MosquittoServer
from tests.harness.postgres import fresh_database
from tests.harness.procs import Proc, Procs, ProxyFactory, TcpProxy
from tests.harness.timing import eventually, timeout

# Errors a client sees when its server is cut off (asyncpg wraps some, not all).
PG_CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
)


def _mqtt_client(url: str, **kwargs: Any) -> aiomqtt.Client:
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return aiomqtt.Client(parts.hostname, parts.port, timeout=timeout(5), **kwargs)


async def _first_message(client: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(timeout(5)):
        async for message in client.messages:
            return message
    raise AssertionError("the message stream ended")


# --------------------------------------------------------------------------- mosquitto


async def test_mosquitto_keeps_port_and_retained_qos1_message_across_restarts(
    mosquitto: MosquittoServer,
) -> None:
    port = mosquitto.port
    assert mosquitto.url == f"mqtt://127.0.0.1:{port}"
    async with _mqtt_client(mosquitto.url) as client:
        await client.publish("harness/retained", b"kept", qos=1, retain=True)

    mosquitto.restart()
    assert mosquitto.port == port

    async with _mqtt_client(mosquitto.url) as client:
        await client.subscribe("harness/retained", qos=1)
        message = await _first_message(client)
    assert message.payload == b"kept"
    assert message.retain

    mosquitto.kill()
    assert not mosquitto.is_running
    mosquitto.start()
    assert mosquitto.port == port
    async with _mqtt_client(mosquitto.url) as client:
        await client.subscribe("harness/retained", qos=1)
        message = await _first_message(client)
    assert message.payload == b"kept"


async def test_mosquitto_restart_keeps_queued_qos1_messages_of_persistent_sessions(
    mosquitto: MosquittoServer,
) -> None:
    async with _mqtt_client(
        mosquitto.url, identifier="harness-sub", clean_session=False
    ) as subscriber:
        await subscriber.subscribe("harness/queued", qos=1)
    async with _mqtt_client(mosquitto.url) as publisher:
        await publisher.publish("harness/queued", b"while away", qos=1)

    mosquitto.restart()

    async with _mqtt_client(
        mosquitto.url, identifier="harness-sub", clean_session=False
    ) as subscriber:
        message = await _first_message(subscriber)
    assert message.payload == b"while away"
    assert str(message.topic) == "harness/queued"


def test_mosquitto2_is_a_separate_broker(
    mosquitto: MosquittoServer, mosquitto2: MosquittoServer
) -> None:
    assert mosquitto.port != mosquitto2.port
    assert mosquitto.state_dir != mosquitto2.state_dir
    assert mosquitto.is_running and mosquitto2.is_running


def test_mosquitto_log_tail_shows_connections(mosquitto: MosquittoServer) -> None:
    assert "mosquitto version" in mosquitto.log_tail(20)


# --------------------------------------------------------------------------- postgres


async def test_pg_dsn_is_an_empty_database_of_its_own(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        name = await conn.fetchval("SELECT current_database()")
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
        await conn.execute("CREATE TABLE scratch (id int PRIMARY KEY)")
    finally:
        await conn.close()
    assert name.startswith("fusebox_test_")
    assert tables == []


async def _database_exists(admin_dsn: str, name: str) -> bool:
    conn = await asyncpg.connect(admin_dsn)
    try:
        return bool(
            await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        )
    finally:
        await conn.close()


async def test_fresh_database_is_dropped_afterwards_even_with_open_sessions(
    pg_server: str,
) -> None:
    with fresh_database(pg_server) as dsn:
        name = urllib.parse.urlsplit(dsn).path.lstrip("/")
        assert await _database_exists(pg_server, name)
        left_open = await asyncpg.connect(dsn)
    assert not await _database_exists(pg_server, name)
    left_open.terminate()


# --------------------------------------------------------------------------- proxy


async def test_tcp_proxy_pause_cuts_postgres_and_resume_restores_it(
    pg_dsn: str, tcp_proxy_factory: ProxyFactory
) -> None:
    proxy = tcp_proxy_factory(pg_dsn)
    via_proxy = proxy.url_for(pg_dsn)
    assert f"127.0.0.1:{proxy.port}" in via_proxy

    conn = await asyncpg.connect(via_proxy, timeout=timeout(5))
    assert await conn.fetchval("SELECT 1") == 1

    proxy.pause()
    with pytest.raises(PG_CONNECTION_ERRORS):
        await conn.fetchval("SELECT 1", timeout=timeout(5))
    conn.terminate()
    with pytest.raises(PG_CONNECTION_ERRORS):
        await asyncpg.connect(via_proxy, timeout=timeout(2))

    proxy.resume()
    conn = await asyncpg.connect(via_proxy, timeout=timeout(5))
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


async def test_tcp_proxy_blackhole_makes_clients_time_out(
    pg_dsn: str, tcp_proxy_factory: ProxyFactory
) -> None:
    proxy = tcp_proxy_factory(pg_dsn)
    proxy.pause(mode="blackhole")
    with pytest.raises((TimeoutError, asyncio.TimeoutError)):
        await asyncpg.connect(proxy.url_for(pg_dsn), timeout=0.5)
    proxy.resume()
    conn = await asyncpg.connect(proxy.url_for(pg_dsn), timeout=timeout(5))
    await conn.close()


async def test_tcp_proxy_pause_cuts_mqtt_and_resume_restores_it(
    mosquitto: MosquittoServer, tcp_proxy_factory: ProxyFactory
) -> None:
    proxy = tcp_proxy_factory(mosquitto.url)
    via_proxy = proxy.url_for(mosquitto.url)
    assert via_proxy == f"mqtt://127.0.0.1:{proxy.port}"

    async with _mqtt_client(via_proxy) as client:
        await client.subscribe("harness/proxy", qos=1)
        await client.publish("harness/proxy", b"one", qos=1)
        assert (await _first_message(client)).payload == b"one"

        proxy.pause()
        with pytest.raises(aiomqtt.MqttError):
            await client.publish("harness/proxy", b"two", qos=1, timeout=timeout(2))
            await _first_message(client)
    with pytest.raises(aiomqtt.MqttError):
        async with _mqtt_client(via_proxy):
            pass

    proxy.resume()
    async with _mqtt_client(via_proxy) as client:
        await client.subscribe("harness/proxy", qos=1)
        await client.publish("harness/proxy", b"three", qos=1)
        assert (await _first_message(client)).payload == b"three"


async def test_tcp_proxy_forwards_to_a_unix_socket(tmp_path: Path) -> None:
    socket_path = tmp_path / "echo.sock"

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(echo, str(socket_path))
    try:
        with TcpProxy(target_unix_path=socket_path) as proxy:
            reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
            writer.write(b"ping")
            async with asyncio.timeout(timeout(5)):
                assert await reader.readexactly(4) == b"ping"
            proxy.pause()
            async with asyncio.timeout(timeout(5)):
                assert await reader.read(1024) == b""
            writer.close()
    finally:
        server.close()


def test_tcp_proxy_for_url_understands_unix_socket_dsns() -> None:
    dsn = "postgresql://postgres@/db1?host=/run/pg&port=5433&sslmode=disable"
    proxy = TcpProxy.for_url(dsn)
    assert proxy.target_unix_path == Path("/run/pg/.s.PGSQL.5433")
    proxy._port = 6000  # as if started
    assert (
        proxy.url_for(dsn) == "postgresql://postgres@127.0.0.1:6000/db1?sslmode=disable"
    )

    tcp = TcpProxy.for_url("mqtt://broker.example:1884")
    assert (tcp.target_host, tcp.target_port) == ("broker.example", 1884)


# --------------------------------------------------------------------------- procs


async def test_proc_logs_output_and_exit_code(
    procs: Procs, artifacts_dir: Path
) -> None:
    proc = procs.start(
        [sys.executable, "-c", "import sys; print('hello from child'); sys.exit(3)"],
        name="child",
    )
    assert await proc.wait_async(timeout_s=timeout(10)) == 3
    assert "hello from child" in proc.log_tail(5)
    assert proc.log_path.parent == artifacts_dir
    assert proc.failed_unexpectedly


async def test_proc_kill_is_a_crash_and_terminate_is_graceful(procs: Procs) -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    crashed = procs.start(sleeper, name="crashed")
    stopped = Proc(sleeper, name="stopped").start()  # direct Procs are tracked too
    assert crashed.kill() == -9
    assert stopped.terminate(timeout_s=timeout(5)) == -15
    assert not crashed.failed_unexpectedly


# --------------------------------------------------------------------------- timing


async def test_eventually_returns_the_truthy_value() -> None:
    calls: list[int] = []

    async def third_time_lucky() -> int | None:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else None

    assert (
        await eventually(
            third_time_lucky, timeout_s=timeout(5), interval_s=0.01, message="lucky"
        )
        == 3
    )


async def test_eventually_says_what_it_waited_for_and_what_it_saw() -> None:
    depth = {"rows": 7}
    with pytest.raises(AssertionError, match=r"queue drained .*last value: False"):
        await eventually(
            lambda: depth["rows"] == 0, timeout_s=0.05, message="queue drained"
        )

    def not_up_yet() -> bool:
        raise ConnectionRefusedError("port 1 refused")

    with pytest.raises(AssertionError, match=r"up .*ConnectionRefusedError: port 1"):
        await eventually(not_up_yet, timeout_s=0.05, message="up")

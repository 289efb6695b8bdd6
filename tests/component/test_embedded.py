"""The embedded defaults of ``fusebox demo``: amqtt, Mosquitto, embedded PostgreSQL."""

from __future__ import annotations

import asyncio
import urllib.parse
from pathlib import Path

import aiomqtt
import asyncpg
import pytest

from fusebox.embedded import (
    MosquittoProcess,
    ThreadedAmqttBroker,
    find_mosquitto,
    pick_broker,
    run_embedded_broker,
    start_embedded_postgres,
)
from tests.harness.timing import timeout


async def _qos1_round_trip(url: str, *, retained: bool = False) -> None:
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    async with aiomqtt.Client(parts.hostname, parts.port, timeout=timeout(5)) as client:
        if retained:
            await client.publish("embedded/retained", b"last", qos=1, retain=True)
            await client.subscribe("embedded/retained", qos=1)
        else:
            await client.subscribe("embedded/#", qos=1)
            await client.publish("embedded/ping", b"ping", qos=1)
        async with asyncio.timeout(timeout(5)):
            message = await anext(aiter(client.messages))
    assert message.qos == 1
    assert message.payload == (b"last" if retained else b"ping")


async def test_amqtt_broker_on_the_callers_loop_does_qos1_and_retained() -> None:
    broker = await run_embedded_broker("127.0.0.1")
    try:
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        assert not broker.supports_shared_subscriptions
        await _qos1_round_trip(broker.url)
        await _qos1_round_trip(broker.url, retained=True)
    finally:
        await broker.stop()


async def test_pick_broker_falls_back_to_amqtt_in_a_thread(tmp_path: Path) -> None:
    broker = pick_broker(tmp_path, prefer="amqtt")
    try:
        assert isinstance(broker, ThreadedAmqttBroker)
        await _qos1_round_trip(broker.url)
    finally:
        broker.stop()


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
async def test_pick_broker_prefers_mosquitto(tmp_path: Path) -> None:
    broker = pick_broker(tmp_path / "broker")
    try:
        assert isinstance(broker, MosquittoProcess)
        assert broker.supports_shared_subscriptions
        assert (tmp_path / "broker" / "mosquitto.conf").exists()
        await _qos1_round_trip(broker.url)
    finally:
        broker.stop()


async def test_embedded_postgres_starts_creates_the_database_and_restarts(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "pg" / "data"
    postgres = await asyncio.to_thread(start_embedded_postgres, data_dir)
    try:
        conn = await asyncpg.connect(postgres.dsn, timeout=timeout(10))
        try:
            assert await conn.fetchval("SELECT 1") == 1
            assert await conn.fetchval("SELECT current_database()") == "fusebox"
            await conn.execute("CREATE TABLE kept (id int)")
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(postgres.stop)

    # The data survives a stop: the demo keeps its state between runs.
    postgres = await asyncio.to_thread(start_embedded_postgres, data_dir)
    try:
        conn = await asyncpg.connect(postgres.dsn, timeout=timeout(10))
        try:
            assert await conn.fetchval("SELECT to_regclass('kept') IS NOT NULL")
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(postgres.stop)

"""The edge outbox on real SQLite files: sequences, dedup, pruning, group commit,
kill -9 at any instant, the full-disk policy and a 30-day backlog."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgpack
import pytest

from edge import OutboxFull
from edge.config import OutboxConfig
from edge.outbox import Event, Outbox, OutboxStore
from protocols.readings import Reading
from tests.harness.timing import timeout

BASE = datetime(2024, 3, 1, tzinfo=UTC)
BASE_MS = int(BASE.timestamp() * 1000)
WRITER = Path(__file__).with_name("_outbox_writer.py")


def at(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


def energy(device: str, seconds: float, wh: float) -> Reading:
    return Reading(device, "import_energy_wh", at(seconds), wh)


def power(device: str, seconds: float, w: float) -> Reading:
    return Reading(device, "power_w", at(seconds), w)


def db_count(store: OutboxStore, where: str = "1") -> int:
    return int(
        store._db.execute(f"SELECT count(*) FROM records WHERE {where}").fetchone()[0]
    )


@contextlib.contextmanager
def opened(path: Path, **kwargs: object) -> Iterator[OutboxStore]:
    store = OutboxStore(path, **kwargs)  # type: ignore[arg-type]
    try:
        yield store
    finally:
        store.close()


# ------------------------------------------------------------------- sequences


def test_sequences_rise_strictly_and_are_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with opened(path) as store:
        results = store.append(
            [
                [power("m1", 0, 1.0), energy("m1", 0, 10.0)],
                [power("m1", 10, 2.0)],
                [energy("m1", 10, 11.0), power("m2", 10, 3.0), power("m3", 10, 4.0)],
            ]
        )
        assert [(r.first_seq, r.last_seq, r.accepted) for r in results] == [
            (1, 2, 2),
            (3, 3, 1),
            (4, 6, 3),
        ]
        (more,) = store.append([[power("m1", 20, 5.0)]])
        assert (more.first_seq, more.last_seq) == (7, 7)
        assert [r.seq for r in store.read(1, None, 100)] == [1, 2, 3, 4, 5, 6, 7]
        # the cloud stores everything: the outbox is empty
        assert store.prune_through(7) == 7
        assert store.backlog_records == 0
        assert db_count(store) == 0

    with opened(path) as store:
        assert store.counters["last_seq"] == 7
        assert store.counters["acked_through"] == 7
        (after,) = store.append([[power("m1", 30, 6.0)]])
        assert (after.first_seq, after.last_seq) == (8, 8)
        # pruned by range (not by watermark) as well: still no reuse
        assert store.prune_range(8, 8) == 1
    with opened(path) as store:
        (again,) = store.append([[power("m1", 40, 7.0), power("m1", 50, 8.0)]])
        assert (again.first_seq, again.last_seq) == (9, 10)
        assert store.stats().last_seq == 10


def test_epoch_is_stable_per_file_and_new_per_file(tmp_path: Path) -> None:
    with opened(tmp_path / "a.db") as store:
        epoch_a = store.epoch
        assert 1 <= epoch_a < 2**63
    with opened(tmp_path / "a.db") as store:
        assert store.epoch == epoch_a
    with opened(tmp_path / "b.db") as store:
        assert store.epoch != epoch_a
        assert 1 <= store.epoch < 2**63


# ----------------------------------------------------------- duplicates, backwards


def test_duplicates_are_dropped_counted_and_remembered(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with opened(path) as store:
        (first,) = store.append([[power("m1", 10, 100.0), energy("m1", 10, 5.0)]])
        assert (first.accepted, first.duplicates) == (2, 0)
        # redelivery: same timestamp, and an older one; and a repeat in one group
        results = store.append(
            [
                [power("m1", 10, 100.0), power("m1", 5, 99.0)],
                [power("m1", 20, 1.0), power("m1", 20, 1.0), energy("m1", 10, 5.0)],
            ]
        )
        assert [(r.accepted, r.duplicates, r.first_seq) for r in results] == [
            (0, 2, None),
            (1, 2, 3),
        ]
        assert store.counters["duplicate_total"] == 4
        # a different stream with the same timestamp is not a duplicate
        (other,) = store.append([[power("m2", 10, 7.0)]])
        assert (other.accepted, other.duplicates) == (1, 0)

    with opened(path) as store:
        assert store.counters["duplicate_total"] == 4
        (late,) = store.append([[power("m1", 20, 1.0), energy("m1", 10, 6.0)]])
        assert (late.accepted, late.duplicates) == (0, 2)
        assert store.counters["duplicate_total"] == 6
        assert db_count(store) == 4
        assert store.counters["appended_total"] == 4


def test_register_running_backwards_is_dropped_and_remembered(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with opened(path) as store:
        store.append([[energy("m1", 0, 1000.0)]])
        (res,) = store.append(
            [[energy("m1", 10, 999.5), energy("m1", 20, 1000.0), power("m1", 30, 5.0)]]
        )
        assert (res.accepted, res.backwards, res.duplicates) == (2, 1, 0)
        # power is a sample: it may go down
        (down,) = store.append([[power("m1", 40, 1.0)]])
        assert (down.accepted, down.backwards) == (1, 0)
        assert store.counters["backwards_total"] == 1
    with opened(path) as store:
        assert store.counters["backwards_total"] == 1
        (res,) = store.append([[energy("m1", 50, 999.0), energy("m1", 60, 1000.5)]])
        assert (res.accepted, res.backwards) == (1, 1)
        assert store.counters["backwards_total"] == 2
        values = [
            r.value
            for r in store.read(1, None, 100)
            if store.stream_name(r.stream) == ("m1", "import_energy_wh")
        ]
        assert values == [1000.0, 1000.0, 1000.5]


# ------------------------------------------------------------------------ events


def test_events_are_stored_with_their_data(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    data = {"connector": 2, "id_tag": "ABC123", "meter_wh": 1234.5, "ok": True}
    with opened(path) as store:
        (res,) = store.append(
            [
                [
                    Event("cp-1", "session_started", at(0), data),
                    power("m1", 0, 5.0),
                    Event("cp-1", "session_started", at(0), {"again": [1, None]}),
                ]
            ]
        )
        assert (res.accepted, res.first_seq, res.last_seq) == (3, 1, 3)
    with opened(path) as store:
        rows = store.read(1, 3, 10)
        assert [r.seq for r in rows] == [1, 2, 3]
        assert store.stream_name(rows[0].stream) == ("cp-1", "session_started")
        assert rows[0].ts_ms == BASE_MS
        assert rows[0].value is None
        assert msgpack.unpackb(rows[0].data) == data
        assert (rows[1].value, rows[1].data) == (5.0, None)
        assert msgpack.unpackb(rows[2].data) == {"again": [1, None]}


def test_a_bad_item_stores_nothing_of_the_call(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with opened(path) as store:
        store.append([[power("m1", 0, 1.0)]])
        with pytest.raises(ValueError, match="bad event kind 'Bad-Kind'"):
            store.append(
                [
                    [power("m9", 10, 1.0), energy("m9", 10, 1.0)],
                    [Event("cp-1", "Bad-Kind", at(10), {})],
                ]
            )
        assert db_count(store) == 1
        assert store.counters["last_seq"] == 1
        # the streams created in the rolled-back transaction work afterwards
        (res,) = store.append([[power("m9", 10, 1.0), energy("m9", 10, 1.0)]])
        assert (res.first_seq, res.last_seq, res.accepted) == (2, 3, 2)
        names = {store.stream_name(r.stream) for r in store.read(2, 3, 10)}
        assert names == {("m9", "power_w"), ("m9", "import_energy_wh")}


# ------------------------------------------------------------- prune, quarantine


def test_prune_and_quarantine_keep_the_backlog_right(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with opened(path) as store:
        store.append([[power("m1", s * 10, float(s)) for s in range(100)]])
        assert store.backlog_records == db_count(store) == 100

        assert store.prune_range(11, 20) == 10
        assert store.prune_range(11, 20) == 0  # an ack delivered twice
        assert store.backlog_records == db_count(store) == 90

        assert store.quarantine_range(41, 45, "reading seq 43 value is not finite") == 5
        assert store.backlog_records == db_count(store) == 85
        assert store.counters["rejected_total"] == 5
        quarantined = store._db.execute(
            "SELECT seq, reason FROM quarantine ORDER BY seq"
        ).fetchall()
        assert quarantined == [
            (s, "reading seq 43 value is not finite") for s in range(41, 46)
        ]

        assert store.prune_through(30) == 20  # 1..10 and 21..30
        assert store.counters["acked_through"] == 30
        assert store.prune_through(25) == 0  # a watermark never goes down
        assert store.counters["acked_through"] == 30
        assert store.backlog_records == db_count(store) == 65
        assert [r.seq for r in store.read(1, 50, 100)] == [
            31,
            32,
            33,
            34,
            35,
            36,
            37,
            38,
            39,
            40,
            46,
            47,
            48,
            49,
            50,
        ]
        assert store.stats().backlog_oldest_ms == BASE_MS + 30 * 10_000

    with opened(path) as store:
        assert store.backlog_records == db_count(store) == 65
        assert store.counters["rejected_total"] == 5
        assert store.counters["acked_through"] == 30
        # a watermark beyond what exists is clamped to the last sequence
        assert store.prune_through(10**12) == 65
        assert store.counters["acked_through"] == 100
        assert store.backlog_records == db_count(store) == 0
        assert store.stats().backlog_oldest_ms is None


# ------------------------------------------------------------------ group commit


async def test_group_commit_resolves_each_submit(tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path / "outbox.db")
    commits: list[int] = []
    real_append = outbox.store.append

    def counting_append(groups):  # type: ignore[no-untyped-def]
        commits.append(len(groups))
        return real_append(groups)

    outbox.store.append = counting_append  # type: ignore[method-assign]
    await outbox.start()
    try:
        # 300 drivers: device d submits its 3 readings, every 5th also a redelivery
        futures = []
        for d in range(300):
            items = [power(f"m{d}", 0, d), energy(f"m{d}", 0, d), power(f"m{d}", 10, d)]
            if d % 5 == 0:
                items.append(power(f"m{d}", 0, d))
            futures.append(outbox.submit(items))
        async with asyncio.timeout(timeout(20)):
            results = await asyncio.gather(*futures)
        # a second wave after the first committed
        async with asyncio.timeout(timeout(20)):
            late = await asyncio.gather(
                *(outbox.append([power(f"m{d}", 20, 1.0)]) for d in range(50))
            )
    finally:
        await outbox.close()

    assert [(r.accepted, r.duplicates) for r in results] == [
        (3, 1 if d % 5 == 0 else 0) for d in range(300)
    ]
    spans = [(r.first_seq, r.last_seq) for r in results]
    assert spans == [(3 * d + 1, 3 * d + 3) for d in range(300)]
    assert [(r.first_seq, r.last_seq) for r in late] == [
        (901 + d, 901 + d) for d in range(50)
    ]
    assert sum(commits) == 350
    assert len(commits) < 350  # grouped: fewer commits than submits
    assert commits[0] == 300

    with opened(tmp_path / "outbox.db") as store:
        rows = store.read(1, None, 10_000)
        assert len(rows) == 950
        for d in range(300):
            got = [
                (store.stream_name(r.stream), r.ts_ms, r.value)
                for r in rows[3 * d : 3 * d + 3]
            ]
            assert got == [
                ((f"m{d}", "power_w"), BASE_MS, float(d)),
                ((f"m{d}", "import_energy_wh"), BASE_MS, float(d)),
                ((f"m{d}", "power_w"), BASE_MS + 10_000, float(d)),
            ]


async def test_group_commit_respects_max_group_records(tmp_path: Path) -> None:
    outbox = Outbox(OutboxStore(tmp_path / "outbox.db"), max_group_records=10)
    commits: list[int] = []
    real_append = outbox.store.append

    def counting_append(groups):  # type: ignore[no-untyped-def]
        commits.append(sum(len(g) for g in groups))
        return real_append(groups)

    outbox.store.append = counting_append  # type: ignore[method-assign]
    await outbox.start()
    try:
        futures = [
            outbox.submit([power(f"m{d}", s, 1.0) for s in range(4)]) for d in range(9)
        ]
        async with asyncio.timeout(timeout(20)):
            results = await asyncio.gather(*futures)
    finally:
        await outbox.close()
    assert commits == [12, 12, 12]  # 4 + 4 + 4: the group closes once it reaches 10
    assert [(r.first_seq, r.last_seq) for r in results] == [
        (4 * d + 1, 4 * d + 4) for d in range(9)
    ]


# ------------------------------------------------------------ kill -9 at any instant


def _writer_group(k: int, devices: int) -> list[tuple[tuple[str, str], int, float]]:
    ts_ms = BASE_MS + k * 10_000
    out = []
    for i in range(devices):
        out.append(((f"m{i}", "import_energy_wh"), ts_ms, float(k * 10 + i)))
        out.append(((f"m{i}", "power_w"), ts_ms, float((k * 7 + i) % 5000)))
    return out


def test_kill_minus_9_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    devices, in_flight, rounds = 5, 4, 8
    rng = random.Random(20240301)
    acknowledged: dict[int, tuple[int, int]] = {}  # tick -> (first_seq, last_seq)
    highest_printed = 0
    for round_no in range(rounds):
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(path), str(devices), str(in_flight)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            first_line = proc.stdout.readline()  # type: ignore[union-attr]
            assert first_line, f"writer died: {proc.stderr.read()}"  # type: ignore[union-attr]
            time.sleep(rng.uniform(0.0, 0.4))  # the random instant to kill at
            proc.kill()
            out, _err = proc.communicate(timeout=timeout(10))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -9
        lines = (first_line + out).split("\n")
        complete = [ln for ln in lines[:-1] if ln]  # the last piece may be cut off
        assert complete, f"round {round_no}: nothing acknowledged"
        for line in complete:
            tick, first, last = (int(x) for x in line.split())
            assert tick not in acknowledged, f"tick {tick} acknowledged twice"
            # a new round never hands out a number an earlier round printed
            assert first > highest_printed, (round_no, tick, first, highest_printed)
            acknowledged[tick] = (first, last)
        highest_printed = max(v[1] for v in acknowledged.values())

    spans = sorted(acknowledged.values())
    for (_, last_a), (first_b, _) in itertools.pairwise(spans):
        assert first_b > last_a, "a sequence number was handed out twice"

    with opened(path) as store:
        for tick, (first, last) in sorted(acknowledged.items()):
            rows = store.read(first, last, 100)
            assert last - first + 1 == 2 * devices
            got = [(store.stream_name(r.stream), r.ts_ms, r.value) for r in rows]
            assert got == _writer_group(tick, devices), f"tick {tick} lost or changed"
        # no seq reused, no gap, no duplicate reading
        last_seq = store.counters["last_seq"]
        assert db_count(store) == last_seq
        assert store._db.execute(
            "SELECT min(seq), max(seq) FROM records"
        ).fetchone() == (
            1,
            last_seq,
        )
        dup = store._db.execute(
            "SELECT stream, ts_ms, count(*) FROM records GROUP BY stream, ts_ms "
            "HAVING count(*) > 1 LIMIT 5"
        ).fetchall()
        assert dup == []
        assert store.counters["duplicate_total"] == 0
        assert store._db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        # new appends get numbers above everything ever printed
        (res,) = store.append([[power("fresh", 0, 1.0)]])
        assert res.first_seq == last_seq + 1
        assert res.first_seq > highest_printed
    assert len(acknowledged) >= rounds


# ------------------------------------------------------------------- full disk


def _mixed_group(tick0: int, ticks: int, devices: int) -> list[Reading]:
    items: list[Reading] = []
    for k in range(tick0, tick0 + ticks):
        for i in range(devices):
            items.append(power(f"m{i}", k * 10, float(100 + (k + i) % 900)))
            items.append(energy(f"m{i}", k * 10, float(k * 10 + i)))
    return items


def _energy_group(tick0: int, ticks: int, devices: int) -> list[Reading]:
    return [
        energy(f"m{i}", k * 10, float(k * 10 + i))
        for k in range(tick0, tick0 + ticks)
        for i in range(devices)
    ]


def _energy_rows(store: OutboxStore) -> set[tuple[str, int, float | None]]:
    return {
        (device, ts_ms, value)
        for device, ts_ms, value in store._db.execute(
            "SELECT s.device_id, r.ts_ms, r.value FROM records r "
            "JOIN streams s ON s.id = r.stream WHERE s.name = 'import_energy_wh'"
        )
    }


def test_full_disk_policy_thins_samples_and_keeps_every_register(
    tmp_path: Path,
) -> None:
    cap = 2 * 1024 * 1024
    devices, ticks_per_group = 10, 50  # 1,000 rows per append
    slack = 64 * 1024  # one commit of 1,000 rows is well under this
    path = tmp_path / "outbox.db"
    appended_energy: set[tuple[str, int, float | None]] = set()
    tick = 0
    with opened(path, cap_bytes=cap, synchronous="NORMAL") as store:
        # phase 1: mixed samples and registers, ~1.5x what fits
        for _ in range(120):
            group = _mixed_group(tick, ticks_per_group, devices)
            (res,) = store.append([group])
            assert res.accepted == len(group)
            appended_energy |= {
                (r.device_id, int(r.ts.timestamp() * 1000), r.value)
                for r in group
                if r.quantity == "import_energy_wh"
            }
            tick += ticks_per_group
            assert store.used_bytes() <= cap + slack
        thinned = store.counters["thinned_total"]
        assert thinned > 0
        assert store.counters["appended_total"] == 120_000
        assert db_count(store) == 120_000 - thinned == store.backlog_records
        assert _energy_rows(store) == appended_energy
        # oldest first: the newest samples are all still there
        newest = BASE_MS + (tick - 1) * 10_000
        assert db_count(store, f"ts_ms = {newest}") == 2 * devices
        # thinned samples are gone from old buckets, one per stream per bucket kept
        assert (
            db_count(store, "stream IN (SELECT id FROM streams WHERE kind = 'instant')")
            < 60_000
        )

        # phase 2: registers only, until nothing fits
        full_at = None
        for _ in range(200):
            group = _energy_group(tick, ticks_per_group, devices)
            before = (
                db_count(store),
                store.counters["last_seq"],
                store.counters["appended_total"],
            )
            try:
                store.append([group])
            except OutboxFull as exc:
                assert "only registers and events are left" in str(exc)
                after = (
                    db_count(store),
                    store.counters["last_seq"],
                    store.counters["appended_total"],
                )
                assert after == before, "a refused append stored something"
                full_at = tick
                break
            appended_energy |= {
                (r.device_id, int(r.ts.timestamp() * 1000), r.value) for r in group
            }
            tick += ticks_per_group
            assert store.used_bytes() <= cap + slack
        assert full_at is not None, "the outbox never filled up"
        assert (
            db_count(store, "stream IN (SELECT id FROM streams WHERE kind = 'instant')")
            == 0
        )
        # the registers fill the cap, densely: the space thinning freed was reused
        # (deleting samples in place left half-empty pages: 50,500 registers fit)
        assert store.used_bytes() >= 0.95 * cap
        assert store.used_bytes() / len(appended_energy) < 30
        assert _energy_rows(store) == appended_energy
        counters = dict(store.counters)
        # refused again while full, and a power sample is refused too
        with pytest.raises(OutboxFull):
            store.append([[power("m0", full_at * 10, 1.0)]])
        # nothing stored; the refused reading is counted, by reason
        assert store.counters == {
            **counters,
            "refused_cap_total": counters["refused_cap_total"] + 1,
        }
        assert counters["refused_cap_total"] == ticks_per_group * devices
        assert counters["refused_disk_total"] == 0

    with opened(path, cap_bytes=cap) as store:
        assert store.counters["thinned_total"] == counters["thinned_total"]
        assert store.counters["last_seq"] == counters["last_seq"]
        assert store.backlog_records == db_count(store)
        assert _energy_rows(store) == appended_energy
        # once the uplink drains, appends fit again
        store.prune_through(store.counters["last_seq"] // 2)
        (res,) = store.append([_energy_group(full_at, ticks_per_group, devices)])
        assert res.accepted == ticks_per_group * devices


def test_sqlite_full_from_the_disk_thins_or_refuses_cleanly(tmp_path: Path) -> None:
    """The disk (not the cap) fills: simulated with ``PRAGMA max_page_count``."""
    path = tmp_path / "outbox.db"
    devices, ticks_per_group = 10, 50
    appended_energy: set[tuple[str, int, float | None]] = set()
    tick = 0
    outcomes = {"ok": 0, "full": 0}
    with opened(path, synchronous="NORMAL") as store:  # default cap: far away
        for _ in range(20):
            store.append([_mixed_group(tick, ticks_per_group, devices)])
            appended_energy |= {
                (f"m{i}", BASE_MS + k * 10_000, float(k * 10 + i))
                for k in range(tick, tick + ticks_per_group)
                for i in range(devices)
            }
            tick += ticks_per_group
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages + 60}")

        for _ in range(60):
            group = _mixed_group(tick, ticks_per_group, devices)
            last_seq = store.counters["last_seq"]
            try:
                (res,) = store.append([group])
            except OutboxFull as exc:
                assert "the disk is full" in str(exc)
                assert store.counters["last_seq"] == last_seq
                outcomes["full"] += 1
                continue
            assert res.accepted == len(group)
            outcomes["ok"] += 1
            appended_energy |= {
                (r.device_id, int(r.ts.timestamp() * 1000), r.value)
                for r in group
                if r.quantity == "import_energy_wh"
            }
            tick += ticks_per_group
        assert outcomes["ok"] > 0 and outcomes["full"] > 0, outcomes
        assert store.counters["thinned_total"] > 0
        assert store._db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert _energy_rows(store) == appended_energy
        assert db_count(store) == store.backlog_records
        assert (
            db_count(store)
            == store.counters["appended_total"] - store.counters["thinned_total"]
        )
        # still usable: once the uplink drains, appends fit again
        store.prune_through(store.counters["last_seq"])
        (res,) = store.append([_mixed_group(tick, ticks_per_group, devices)])
        assert res.accepted == 2 * ticks_per_group * devices

    with opened(path) as store:
        assert store._db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db_count(store) == 2 * ticks_per_group * devices


def test_sqlite_full_on_a_tiny_tmpfs(tmp_path: Path) -> None:
    """A real full file system. Needs root and ``mount``; skipped otherwise."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
            timeout=timeout(10),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        devices, ticks_per_group = 10, 25
        appended_energy: set[tuple[str, int, float | None]] = set()
        tick = 0
        outcomes = {"ok": 0, "full": 0}
        # something else on the gateway fills the disk, leaving the outbox 1.5 MB
        ballast = mnt / "ballast"
        ballast.write_bytes(b"\0" * (4 * 1024 * 1024 - 1536 * 1024))
        with opened(mnt / "outbox.db", synchronous="NORMAL") as store:
            for _ in range(400):
                group = _mixed_group(tick, ticks_per_group, devices)
                last_seq = store.counters["last_seq"]
                try:
                    (res,) = store.append([group])
                except OutboxFull:
                    assert store.counters["last_seq"] == last_seq
                    outcomes["full"] += 1
                    if outcomes["full"] >= 5:
                        break
                    continue
                assert res.accepted == len(group)
                outcomes["ok"] += 1
                appended_energy |= {
                    (r.device_id, int(r.ts.timestamp() * 1000), r.value)
                    for r in group
                    if r.quantity == "import_energy_wh"
                }
                tick += ticks_per_group
            assert outcomes["full"] > 0, outcomes
            assert outcomes["ok"] > 0, outcomes
            assert store._db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert _energy_rows(store) == appended_energy
            # the disk gets space again: the same store appends again
            ballast.unlink()
            group = _mixed_group(tick, ticks_per_group, devices)
            (res,) = store.append([group])
            assert res.accepted == len(group)
            appended_energy |= {
                (r.device_id, int(r.ts.timestamp() * 1000), r.value)
                for r in group
                if r.quantity == "import_energy_wh"
            }
        with opened(mnt / "outbox.db") as store:
            assert store._db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert _energy_rows(store) == appended_energy
            assert db_count(store) == store.backlog_records
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, timeout=timeout(10))


# ------------------------------------------------------------- 30-day backlog


@pytest.mark.slow
def test_thirty_days_of_ten_meters_fit_the_default_cap(tmp_path: Path) -> None:
    devices, period_s, days = 10, 10, 30
    ticks = days * 86_400 // period_s  # 259,200 per device
    cap = int(OutboxConfig().cap_mb * 1024 * 1024)
    group_ticks = 5_000  # 50,000 rows per commit, the Outbox's max group
    path = tmp_path / "outbox.db"
    started = time.perf_counter()
    with opened(path, cap_bytes=cap) as store:
        device_ids = [f"meter-{i:02d}" for i in range(devices)]
        for t0 in range(0, ticks, group_ticks):
            group = []
            for k in range(t0, min(ticks, t0 + group_ticks)):
                ts = BASE + timedelta(seconds=k * period_s)
                for i, dev in enumerate(device_ids):
                    if (k + i) % 2:
                        group.append(
                            Reading(dev, "import_energy_wh", ts, 1e6 + k * 3.7 + i)
                        )
                    else:
                        group.append(
                            Reading(dev, "power_w", ts, float((k * 13 + i) % 7000))
                        )
            store.append([group])
        stats = store.stats()
    elapsed = time.perf_counter() - started

    readings = devices * ticks
    assert readings == 2_592_000
    assert stats.counters["appended_total"] == readings
    assert stats.backlog_records == readings
    assert stats.counters["thinned_total"] == 0
    assert stats.last_seq == readings
    assert stats.used_bytes <= cap
    print(
        f"\n30-day backlog: {readings:,} readings in {stats.used_bytes / 1e6:.1f} MB "
        f"used ({stats.used_bytes / readings:.1f} bytes/reading; file+WAL "
        f"{stats.file_bytes / 1e6:.1f} MB; cap {cap / 1e6:.0f} MB); appended in "
        f"{elapsed:.1f} s"
    )


async def test_one_bad_group_does_not_fail_the_others_in_its_commit(tmp_path) -> None:
    from edge.outbox import Event, Outbox

    outbox = Outbox.open(tmp_path / "o.db", cap_bytes=0)
    await outbox.start()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    good = [Reading("m1", "power_w", t0 + timedelta(seconds=i), 1.0) for i in range(3)]
    bad = [Event("m1", "Not A Kind", t0, {})]
    futures = [outbox.submit(good[:1]), outbox.submit(bad), outbox.submit(good[1:])]
    results = await asyncio.gather(*futures, return_exceptions=True)
    await outbox.close()
    assert results[0].accepted == 1
    assert isinstance(results[1], ValueError)
    assert results[2].accepted == 2


def test_stream_names_stay_readable_while_a_rolled_back_append_reloads_them(
    tmp_path: Path,
) -> None:
    """The uplink names the streams of committed rows (``stream_name``) from the
    event loop's thread while the outbox thread may be reloading the stream maps
    after a rolled-back append. A reader must never see them half rebuilt: a
    KeyError there would end the uplink. Thread switches are forced every
    microsecond so the window, if there is one, is hit."""
    import threading

    with opened(tmp_path / "o.db", cap_bytes=0) as store:
        store.append([[energy(f"m{i}", 1, 100.0) for i in range(40)]])
        sids = list(range(1, 41))
        names = {sid: store.stream_name(sid) for sid in sids}
        stop = threading.Event()
        failures: list[BaseException] = []

        def read() -> None:
            try:
                while not stop.is_set():
                    for sid in sids:
                        assert store.stream_name(sid) == names[sid]
            except BaseException as exc:  # reported below
                failures.append(exc)

        bad = Event("m0", "Not An Event Kind!", at(2), {})
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        reader = threading.Thread(target=read)
        reader.start()
        try:
            for n in range(300):
                with pytest.raises(ValueError):
                    # a new stream, then a bad item: rolled back, maps reloaded
                    store.append([[energy(f"new-{n}", 1, 1.0), bad]])
                if failures:
                    break
        finally:
            stop.set()
            reader.join()
            sys.setswitchinterval(interval)
        assert not failures, (
            f"a reader saw the stream maps half rebuilt: {failures[0]!r}"
        )


async def test_a_prune_wakes_whoever_waits_for_room(tmp_path: Path) -> None:
    """A meter driver refused for want of room waits for the next prune, not a
    backoff of up to 30 s (readings flowed again ~30 s after the cloud came back
    from a full-disk outage before)."""
    outbox = Outbox.open(tmp_path / "o.db", cap_bytes=0)
    await outbox.start()
    try:
        result = await outbox.append([energy("m1", 1, 100.0), energy("m1", 2, 101.0)])
        assert result.first_seq is not None
        # nothing freed: the wait runs out
        assert await outbox.wait_for_room(0.05) is False
        waiting = asyncio.create_task(outbox.wait_for_room(timeout(30)))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        # a prune that deletes nothing frees no room
        assert await outbox.prune_range(1000, 1001) == 0
        await asyncio.sleep(0.05)
        assert not waiting.done()
        assert await outbox.prune_range(result.first_seq, result.first_seq) == 1
        async with asyncio.timeout(timeout(5)):
            assert await waiting is True
    finally:
        await outbox.close()

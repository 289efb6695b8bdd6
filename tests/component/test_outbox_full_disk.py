"""The outbox on a real, tiny, full file system (a 2 MB tmpfs): every write path
(append, prune, quarantine, thinning, stats) copes with "disk full", pruning frees
space, and appends resume after pruning. Needs root and ``mount``; skipped
otherwise."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge import OutboxFull
from edge.outbox import OutboxStore
from edge.outbox_space import SpacePlan, SpaceUse
from tests.component.test_outbox import (
    _energy_group,
    _energy_rows,
    _mixed_group,
    db_count,
    opened,
)
from tests.harness.timing import timeout
from tests.harness.tmpfs import mounted_tmpfs

DISK = 2 * 1024 * 1024


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs, unmounted afterwards."""
    with mounted_tmpfs(tmp_path / "tiny", DISK) as mnt:
        yield mnt


def fill(path: Path) -> int:
    """Something else takes every free byte of the disk; returns bytes taken."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        block = b"\1" * 4096
        with contextlib.suppress(OSError):
            while True:
                written += os.write(fd, block)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return written


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_space_plan_sizes_the_wal_and_the_reserve_from_the_disk() -> None:
    small = SpacePlan.for_disk(DISK, 4096)
    assert small.wal_pages == 32 and small.reserve_bytes == 256 * 1024
    big = SpacePlan.for_disk(64 * 1024**3, 4096)
    assert big.wal_pages == 1000 and big.chunk_rows == 20_000
    use = SpaceUse(
        used_bytes=1_000_000,
        free_page_bytes=100_000,
        logical_bytes=1_100_000,
        db_file_bytes=1_000_000,  # 100 kB waiting in the WAL to extend the file
        wal_file_bytes=small.wal_limit_bytes,
        fs_free_bytes=600_000,
        reserve_held=True,
    )
    headroom = 100_000 + small.wal_limit_bytes  # pending growth, WAL to 2x limit
    limit = small.limit(use, 0)
    assert limit.reason == "disk"
    assert limit.limit_bytes == 1_100_000 + 600_000 - headroom
    assert small.limit(use, 500_000).reason == "cap"
    # thinning moves pages to the freelist: the limit does not move
    thinned = dataclasses.replace(use, used_bytes=900_000, free_page_bytes=200_000)
    assert small.limit(thinned, 0) == limit
    # without its reserve the outbox keeps room to make it again
    no_reserve = dataclasses.replace(thinned, reserve_held=False)
    assert small.limit(no_reserve, 0).limit_bytes == (
        limit.limit_bytes - small.reserve_bytes
    )
    # something else ate the headroom: the limit is what the file holds
    eaten = dataclasses.replace(thinned, fs_free_bytes=10_000)
    assert small.limit(eaten, 0).limit_bytes == 1_100_000


def test_the_outbox_alone_fills_the_disk_and_never_hits_sqlite_full(
    tiny_disk: Path,
) -> None:
    devices, ticks = 3, 5
    tick = 0
    kept: set[tuple[str, int, float | None]] = set()
    with opened(tiny_disk / "outbox.db", cap_bytes=0) as store:
        assert store.reserve.held
        # power and registers: far more than 2 MB, thinned as the disk fills
        for _ in range(3000):
            group = _mixed_group(tick, ticks, devices)
            (res,) = store.append([group])
            assert res.accepted == len(group)
            kept |= {
                (r.device_id, int(r.ts.timestamp() * 1000), r.value)
                for r in group
                if r.quantity == "import_energy_wh"
            }
            tick += ticks
        assert store.counters["thinned_disk_total"] > 0
        assert store.counters["thinned_total"] == store.counters["thinned_disk_total"]
        # then registers only, until the disk holds no more
        refused = 0
        for _ in range(3000):
            group = _energy_group(tick, ticks, devices)
            try:
                store.append([group])
            except OutboxFull as exc:
                assert "the disk is full" in str(exc)
                refused += 1
                if refused == 3:
                    break
                continue
            kept |= {
                (r.device_id, int(r.ts.timestamp() * 1000), r.value) for r in group
            }
            tick += ticks
        assert refused == 3
        assert store.counters["refused_disk_total"] == 3 * ticks * devices
        # thinning and refusing came first: SQLite never saw a full disk
        assert store.reserve.released_total == 0 and store.reserve.held
        assert _energy_rows(store) == kept
        stats = store.stats()
        assert stats.limit_reason == "disk"
        assert stats.used_bytes <= stats.limit_bytes

        # the cloud acknowledges half: pruning runs, and appends fit again
        t0 = time.perf_counter()
        half = store.counters["last_seq"] // 2
        pruned = store.prune_through(half)
        took = time.perf_counter() - t0
        assert pruned > 0 and store.counters["acked_through"] == half
        assert took < timeout(2), took
        (res,) = store.append([_energy_group(tick, ticks, devices)])
        assert res.accepted == ticks * devices
        assert store._db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db_count(store) == store.backlog_records


def _load(store: OutboxStore, groups: int) -> int:
    tick = 0
    for _ in range(groups):
        store.append([_mixed_group(tick, 5, 3)])
        tick += 5
    return tick


def test_a_disk_that_fills_after_a_checkpoint_still_prunes_and_resumes(
    tiny_disk: Path,
) -> None:
    """The WAL was checkpointed and truncated, then something else took every
    free byte: the first write needs WAL space the disk does not have."""
    with opened(tiny_disk / "outbox.db", cap_bytes=0) as store:
        tick = _load(store, 300)
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        fill(tiny_disk / "ballast")
        assert free_bytes(tiny_disk) == 0
        last_seq = store.counters["last_seq"]

        # append: refused and counted (or stored, thinning into free pages), never
        # an unhandled error
        for k in range(5):
            with contextlib.suppress(OutboxFull):
                store.append([_energy_group(tick + k, 1, 3)])
        refused_disk = store.counters["refused_disk_total"]
        # thinning, quarantine and stats do not raise
        store.thin(force=True)
        assert store.quarantine_range(1, 10, "test: a bad batch") >= 0
        stats = store.stats()
        assert stats.backlog_records == db_count(store)
        # prune: the reserve is given back so the delete can be written
        pruned = store.prune_through(last_seq // 2)
        assert pruned > 0
        assert store.counters["acked_through"] == last_seq // 2
        assert store.reserve.released_total == 1
        assert store.prunes_pending == 0
        pruned_range = store.prune_range(last_seq // 2 + 1, last_seq // 2 + 400)
        assert pruned_range > 0
        # appends resume in the pages pruning freed, with the disk still full
        (res,) = store.append([_energy_group(tick + 10, 5, 3)])
        assert res.accepted == 15
        assert store.counters["refused_disk_total"] == refused_disk
        assert store._db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db_count(store) == store.backlog_records

        # the other user frees its space: the reserve comes back
        (tiny_disk / "ballast").unlink()
        store.maintained_stats()
        assert store.reserve.held


def test_a_prune_the_disk_refuses_is_retried_and_never_overclaimed(
    tiny_disk: Path,
) -> None:
    with opened(tiny_disk / "outbox.db", cap_bytes=0) as store:
        _load(store, 300)
        last_seq = store.counters["last_seq"]
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.reserve.release()  # as if a first emergency had used it up
        fill(tiny_disk / "ballast")
        before = db_count(store)

        # nothing can be written: the prune is remembered, not raised
        assert store.prune_range(1, 500) == 0
        assert store.prune_through(last_seq) == 0
        assert store.prunes_pending == 2
        assert store.counters["acked_through"] == 0  # claims nothing not deleted
        assert store.stats().acked_through == 0
        assert db_count(store) == before
        assert store.maintained_stats().prunes_pending == 2

        (tiny_disk / "ballast").unlink()
        stats = store.maintained_stats()
        assert stats.prunes_pending == 0
        assert stats.acked_through == last_seq
        assert db_count(store) == 0 == stats.backlog_records
        assert store.reserve.held

    with opened(tiny_disk / "outbox.db", cap_bytes=0) as store:
        assert store.counters["acked_through"] == last_seq


def test_restart_on_a_full_disk_writes_nothing_at_open(tiny_disk: Path) -> None:
    with opened(tiny_disk / "outbox.db", cap_bytes=0) as store:
        _load(store, 100)
        epoch = store.epoch
    fill(tiny_disk / "ballast")
    with opened(tiny_disk / "outbox.db", cap_bytes=0) as store:
        assert store.epoch == epoch
        assert store.stats().backlog_records == db_count(store)
        with pytest.raises(OutboxFull):  # stored nowhere, refused and counted
            for k in range(2000):
                store.append([_energy_group(10_000 + k, 1, 3)])
        assert store.counters["refused_disk_total"] > 0

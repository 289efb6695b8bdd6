"""Disk space for the outbox: how much it may hold, and the reserve that lets it
delete on a full disk.

Why a full disk is special for SQLite in WAL mode (measured on a 2 MB tmpfs):

* every change, deletes included, is first written to the WAL: pruning 50,000
  readings writes about 260 WAL pages (1 MB), as many as the rows occupied;
* a checkpoint copies the WAL into the database file and must *extend* that file
  for pages added since the last one; if it cannot, the WAL is never reset and
  every later write, pruning too, fails with ``SQLITE_FULL``;
* a checkpoint only runs on its own after ``wal_autocheckpoint`` pages; at the old
  1,000 pages (4 MB) a 2 MB disk filled with WAL before the first one, leaving a
  4 KB database file, a 2 MB log and no way to delete anything.

So ``SpacePlan`` (pure) sizes the WAL between checkpoints and the rows per
prune/thin transaction from the size of the disk, and says how many bytes the
outbox may hold given the free space: the WAL's room to grow, the checkpoint's
pending growth of the database file and the reserve are kept free, and thinning
(then refusing) starts before SQLite ever sees a full disk. ``Reserve`` is a
pre-allocated file beside the outbox that is given back to the file system when
SQLite nevertheless reports ``SQLITE_FULL`` (something else filled the disk), so
that the checkpoint and the prune that frees space can still run; it is made
again once there is room.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("fusebox.edge.outbox")

_MAX_WAL_PAGES = 1000  # SQLite's default autocheckpoint: 4 MB of 4 KB pages
_MIN_WAL_PAGES = 32
_ROWS_PER_WAL_PAGE = 120  # measured 145-190 rows per page deleted or rewritten
_MAX_CHUNK_ROWS = 20_000
_MIN_CHUNK_ROWS = 500


def is_disk_full(exc: BaseException) -> bool:
    """``SQLITE_FULL`` (or ``ENOSPC``): the file system, or ``max_page_count``."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "full" in str(exc).lower()


@dataclass(frozen=True, slots=True)
class SpaceUse:
    """A snapshot of the outbox's files and the file system they live on."""

    used_bytes: int  # pages holding data
    free_page_bytes: int  # pages on SQLite's freelist: reused before growing
    logical_bytes: int  # the database as SQLite sees it, WAL included
    db_file_bytes: int  # the database file on disk (checkpointed pages)
    wal_file_bytes: int
    fs_free_bytes: int
    reserve_held: bool


@dataclass(frozen=True, slots=True)
class SpaceLimit:
    """The most bytes of data the outbox may hold now, and what sets it."""

    limit_bytes: int
    reason: str  # "cap" (outbox.cap_mb) or "disk" (the file system's free space)


@dataclass(frozen=True, slots=True)
class SpacePlan:
    """Sizes that keep a full disk writable. Pure: no I/O."""

    page_size: int
    wal_limit_bytes: int  # WAL between checkpoints (wal_autocheckpoint)
    chunk_rows: int  # sequence numbers per prune or thinning transaction
    reserve_bytes: int  # given back on SQLITE_FULL

    @classmethod
    def for_disk(cls, disk_bytes: int, page_size: int) -> SpacePlan:
        """A sixteenth of the disk for the WAL between checkpoints (32 to 1,000
        pages); a prune or thin transaction writes about half of that (measured:
        a thinning chunk wrote 19 pages where 13 were planned, so the WAL may
        reach twice its limit before a checkpoint); the reserve covers a
        checkpoint that must extend the database by such a WAL."""
        wal_pages = max(
            _MIN_WAL_PAGES, min(_MAX_WAL_PAGES, disk_bytes // 16 // page_size)
        )
        chunk = max(
            _MIN_CHUNK_ROWS, min(_MAX_CHUNK_ROWS, wal_pages // 2 * _ROWS_PER_WAL_PAGE)
        )
        wal = wal_pages * page_size
        return cls(page_size, wal, chunk, 2 * wal)

    @property
    def wal_pages(self) -> int:
        """The WAL limit in database pages."""
        return self.wal_limit_bytes // self.page_size

    def headroom_bytes(self, use: SpaceUse) -> int:
        """Free file-system space the outbox must leave alone: the checkpoint's
        pending growth of the database file, the WAL's room to reach twice its
        limit, and the reserve while it is not held."""
        pending_growth = max(0, use.logical_bytes - use.db_file_bytes)
        wal_growth = max(0, 2 * self.wal_limit_bytes - use.wal_file_bytes)
        reserve = 0 if use.reserve_held else self.reserve_bytes
        return pending_growth + wal_growth + reserve

    def limit(self, use: SpaceUse, cap_bytes: int) -> SpaceLimit:
        """Data bytes allowed: the cap, or less when the disk is short. Thinning
        moves pages from used to the freelist, so it lowers usage against this
        limit without changing the limit.

        Free pages always count (filling them needs no new space on the disk);
        free disk space only beyond the headroom. When something else has eaten
        into the headroom, thinning cannot give it back (the database file does
        not shrink), so the limit is what the file already holds: the outbox
        stops growing, and the reserve covers the WAL."""
        spare = max(0, use.fs_free_bytes - self.headroom_bytes(use))
        disk = use.used_bytes + use.free_page_bytes + spare
        if cap_bytes and cap_bytes <= disk:
            return SpaceLimit(cap_bytes, "cap")
        return SpaceLimit(max(0, disk), "disk")

    def can_make_reserve(self, use: SpaceUse) -> bool:
        """Room for the reserve after everything else the disk must keep."""
        if use.reserve_held:
            return False
        needed = self.headroom_bytes(use)  # includes the reserve itself
        return use.fs_free_bytes >= needed


class Reserve:
    """A pre-allocated file of ``size`` bytes beside the outbox."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self.released_total = 0

    @property
    def held(self) -> bool:
        """Whether the reserve file exists at its full size."""
        try:
            return self.path.stat().st_size >= self.size
        except OSError:
            return False

    def make(self) -> bool:
        """Allocate the file; ``False`` (and nothing left behind) without room."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                try:
                    os.posix_fallocate(fd, 0, self.size)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    block = b"\0" * 65536
                    for offset in range(0, self.size, len(block)):
                        os.pwrite(fd, block[: self.size - offset], offset)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if not is_disk_full(exc):
                log.warning("outbox: cannot make the reserve %s: %s", self.path, exc)
            return False
        return True

    def release(self) -> int:
        """Give the space back to the file system; returns bytes freed."""
        try:
            size = self.path.stat().st_size
            self.path.unlink()
        except OSError:
            return 0
        self.released_total += 1
        return size


def fs_free_bytes(path: Path) -> int:
    """Bytes free to this user on the file system holding ``path`` (0 if unreadable)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def fs_total_bytes(path: Path) -> int:
    """The size of the file system holding ``path`` (0 if unreadable)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_blocks * st.f_frsize


def file_bytes(path: Path) -> int:
    """The size of the file at ``path`` (0 if it does not exist)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0

"""A small tmpfs for full-disk tests: ``mounted_tmpfs(dir, size_bytes)``.

Mounting needs root; without it (or when ``mount`` fails) the test is skipped
with the reason. The file system is unmounted (lazily) afterwards.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.timing import timeout

__all__ = ["mounted_tmpfs"]


@contextlib.contextmanager
def mounted_tmpfs(mnt: Path, size_bytes: int) -> Iterator[Path]:
    """``mnt`` (created) with a tmpfs of ``size_bytes`` mounted on it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(mnt)],
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
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, timeout=timeout(10))

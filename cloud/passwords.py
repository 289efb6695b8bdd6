"""The password policy of cloud accounts (issue 10): one rule set for every way a
password is set (``fusebox cloud user add``, ``create_user``, the bootstrap
operator, ``POST /v1/auth/password``, the demo's accounts).

A password is refused when it

* is shorter than ``MIN_LENGTH`` (10) characters, longer than ``MAX_BYTES``
  (1024) bytes in UTF-8 (scrypt would silently ignore the rest), or no valid
  text (a lone surrogate);
* is one of the 10,000 most common passwords (compared in lower case), a list
  shipped as data (``cloud/data/common_passwords.json``, from the MIT-licensed
  ``zxcvbn`` frequency lists; where it comes from is in the file);
* equals or contains the account e-mail's name part (the text before ``@``),
  when that part has at least 3 characters; in any case.

No composition rules (digits, symbols): length and not-common are what stop
guessing (NIST SP 800-63B 5.1.1.2). ``password_problem`` is pure (the list is
passed in); ``check_password`` reads the shipped list once and raises
``WeakPassword`` naming the rule.

Hashing (issue 11): ``HashPool`` runs scrypt on a bounded pool of its own and
refuses at once (``HashPoolFull``: the API answers 503 with ``Retry-After``)
when ``FUSEBOX_HASH_WORKERS`` threads are busy and ``FUSEBOX_HASH_QUEUE`` more
per thread wait; ``HashSlots`` is its pure count.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

T = TypeVar("T")

__all__ = [
    "MAX_BYTES",
    "MIN_LENGTH",
    "HashPool",
    "HashPoolFull",
    "HashPoolSettings",
    "HashSlots",
    "WeakPassword",
    "check_password",
    "common_passwords",
    "password_problem",
]

MIN_LENGTH = 10
MAX_BYTES = 1024
_MIN_NAME_PART = 3


class WeakPassword(ValueError):
    """A password the policy refuses; ``str()`` says which rule and what to do."""


def password_problem(
    password: str,
    *,
    email: str | None = None,
    common: Collection[str] = (),
    min_length: int = MIN_LENGTH,
) -> str | None:
    """What is wrong with ``password`` for the account ``email`` (one sentence
    naming the rule), or None if the policy accepts it. ``common``: lower-case
    passwords to refuse."""
    if len(password) < min_length:
        return (
            f"must be at least {min_length} characters long (it has "
            f"{len(password)}); a few unrelated words make a strong one"
        )
    try:
        size = len(password.encode("utf-8"))
    except UnicodeEncodeError:
        return "must be valid text (it holds a lone surrogate character)"
    if size > MAX_BYTES:
        return f"must be at most {MAX_BYTES} bytes long"
    lowered = password.lower()
    if lowered in common:
        return (
            "is one of the 10,000 most common passwords, which are guessed "
            "first; choose another"
        )
    name = (email or "").strip().lower().partition("@")[0]
    if len(name) >= _MIN_NAME_PART and name in lowered:
        return "must not contain the name part of the account's e-mail address"
    return None


@functools.cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords, in lower case (read once)."""
    text = resources.files("cloud.data").joinpath("common_passwords.json").read_text()
    return frozenset(p.lower() for p in json.loads(text)["passwords"])


def check_password(password: str, *, email: str | None = None) -> None:
    """Raise ``WeakPassword`` ("the password ...") unless the policy accepts
    ``password`` for the account ``email``."""
    problem = password_problem(password, email=email, common=common_passwords())
    if problem is not None:
        raise WeakPassword(f"the password {problem}")


# ------------------------------------------------------------ hashing pool


class HashPoolFull(RuntimeError):
    """The hashing pool has no room: answer 503 with ``Retry-After``
    (``retry_after_s``); nothing was hashed."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"password hashing is busy; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class HashPoolSettings(BaseSettings):
    """``FUSEBOX_HASH_WORKERS`` (threads hashing at once; default half the
    cores, at least 1, so the event loop and PostgreSQL keep the rest) and
    ``FUSEBOX_HASH_QUEUE`` (hashes that may wait for a thread, per worker)."""

    model_config = SettingsConfigDict(env_prefix="FUSEBOX_", extra="ignore")

    hash_workers: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 2) // 2), ge=1, le=256
    )
    hash_queue: int = Field(default=8, ge=0, le=1000)


@dataclass
class HashSlots:
    """The pure count behind ``HashPool``: at most ``workers`` hashing and
    ``workers * queue_per_worker`` waiting; ``take`` says whether one more fits."""

    workers: int
    queue_per_worker: int
    taken: int = 0
    refused: int = 0

    @property
    def capacity(self) -> int:
        """Hashes admitted at once (running or waiting for a thread)."""
        return self.workers * (1 + self.queue_per_worker)

    def take(self) -> bool:
        """Count one more hash in; False (and counted as refused) when full."""
        if self.taken >= self.capacity:
            self.refused += 1
            return False
        self.taken += 1
        return True

    def give_back(self) -> None:
        """A hash admitted by ``take`` is done."""
        if self.taken <= 0:
            raise ValueError("no hash in flight to give back")
        self.taken -= 1


class HashPool:
    """Password hashing (scrypt) on its own bounded thread pool, off the event
    loop and off the default executor: at most ``capacity`` hashes admitted, the
    rest refused at once with ``HashPoolFull``, so a morning of logins cannot
    take the CPU every other request needs. ``hashlib.scrypt`` releases the GIL,
    so threads hash in parallel."""

    def __init__(self, workers: int, queue_per_worker: int) -> None:
        self.slots = HashSlots(workers, queue_per_worker)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="hash")
        # one hash takes ~40 ms per core; a full queue drains in about this long
        self.retry_after_s = max(1, math.ceil(0.05 * (1 + queue_per_worker)))

    @classmethod
    def from_settings(cls, s: HashPoolSettings | None = None) -> HashPool:
        """The pool ``HashPoolSettings`` (the environment) describe."""
        s = s or HashPoolSettings()
        return cls(s.hash_workers, s.hash_queue)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the pool; raises ``HashPoolFull`` when it has no room."""
        if not self.slots.take():
            raise HashPoolFull(self.retry_after_s)
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, fn, *args)
        finally:
            self.slots.give_back()

    def close(self) -> None:
        """Stop the threads (hashes under way finish)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

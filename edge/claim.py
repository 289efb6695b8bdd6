"""The gateway's claim code: how an installer proves to the cloud that they stand
in front of this gateway.

At its first start the gateway draws a code such as ``7KQM-3XHD-9TWB``: 12
symbols from a 32-symbol alphabet without the look-alikes (no ``0``/``O``,
``1``/``I``), so 60 random bits that survive being read off a phone screen and
typed again. It is kept beside the outbox (``<outbox stem>-claim.txt``, mode
0600) and stays the same across restarts. The code itself never leaves the site:
the installer reads it on the local page (``edge.local_api``), in the log at start
or from ``fusebox edge claim-code``; the gateway publishes only its sha256 in its
status (``GatewayStatus.claim_sha256``), and the cloud hashes what the installer
types to match it.

The hash is taken over the compact form (upper case, no dashes or spaces), so a
code typed with or without dashes, in either case, matches.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edge import EdgeError
from edge.paths import StatePaths

__all__ = [
    "ALPHABET",
    "GROUP",
    "GROUPS",
    "ClaimCode",
    "ClaimFileError",
    "claim_path_beside",
    "claim_sha256",
    "generate_code",
    "load_or_create",
    "normalise",
    "read_code",
    "write_private_file",
]

# 8 digits and 24 letters: 0, 1, I and O are left out (they read as each other)
ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
GROUP = 4
GROUPS = 3  # 12 symbols of 5 bits: 60 bits

_SYMBOLS = frozenset(ALPHABET)


class ClaimFileError(EdgeError):
    """The claim code file cannot be read or written, or holds no valid code."""


@dataclass(frozen=True, slots=True)
class ClaimCode:
    """A claim code as shown (``XXXX-XXXX-XXXX``) and the sha256 hex published."""

    code: str
    sha256: str
    path: Path


def generate_code() -> str:
    """A fresh code from the operating system's CSPRNG, grouped with dashes."""
    symbols = "".join(secrets.choice(ALPHABET) for _ in range(GROUP * GROUPS))
    return _grouped(symbols)


def _grouped(compact: str) -> str:
    return "-".join(compact[i : i + GROUP] for i in range(0, len(compact), GROUP))


def normalise(text: str) -> str:
    """The code in its shown form, however it was typed; ``ValueError`` if ``text``
    is not a claim code (wrong length or a symbol outside the alphabet)."""
    compact = text.strip().upper().replace("-", "").replace(" ", "")
    if len(compact) != GROUP * GROUPS or not set(compact) <= _SYMBOLS:
        raise ValueError(
            f"not a claim code: {GROUP * GROUPS} symbols of {ALPHABET} expected"
        )
    return _grouped(compact)


def claim_sha256(code: str) -> str:
    """sha256 hex of the compact form (upper case, no dashes), as published."""
    compact = normalise(code).replace("-", "")
    return hashlib.sha256(compact.encode("ascii")).hexdigest()


def claim_path_beside(outbox_path: Path) -> Path:
    """Where the claim code of the gateway with this outbox is kept
    (``StatePaths.claim``)."""
    return StatePaths.beside(outbox_path).claim


def read_code(path: Path) -> ClaimCode:
    """The code kept in ``path``; ``ClaimFileError`` when there is none (the
    gateway has not been started yet) or the file is damaged."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise ClaimFileError(
            f"{path}: no claim code yet; it is created at the gateway's first start "
            "(fusebox edge run)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ClaimFileError(f"{path}: cannot read the claim code ({exc})") from None
    try:
        code = normalise(text)
    except ValueError as exc:
        raise ClaimFileError(
            f"{path}: {exc}; delete the file to draw a new code (a code already "
            "given to an installer then stops working)"
        ) from None
    return ClaimCode(code, claim_sha256(code), path)


def load_or_create(path: Path) -> ClaimCode:
    """The gateway's claim code: read from ``path``, or drawn and stored there
    (atomically, mode 0600) when the file does not exist yet."""
    if path.exists():
        with contextlib.suppress(OSError):
            # written 0600; tighten a copy restored with looser permissions
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
        return read_code(path)
    code = generate_code()
    try:
        write_private_file(path, code + "\n")
    except OSError as exc:
        raise ClaimFileError(f"{path}: cannot store the claim code ({exc})") from None
    return ClaimCode(code, claim_sha256(code), path)


def write_private_file(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically and durably, readable by the
    owner only (0600): a crash leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600: the content is never readable by others,
    # not even for an instant
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself survives power loss
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

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
"""

from __future__ import annotations

import functools
import json
from collections.abc import Collection
from importlib import resources

__all__ = [
    "MAX_BYTES",
    "MIN_LENGTH",
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

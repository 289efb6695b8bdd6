"""The login throttle's policy (protocols.throttle) in worked numbers, and the
password policy (cloud.passwords) rule by rule."""

from __future__ import annotations

import pytest

from cloud.auth import ApiSettings, LoginThrottle
from cloud.passwords import (
    MIN_LENGTH,
    WeakPassword,
    check_password,
    common_passwords,
    password_problem,
)
from protocols.throttle import DelayPolicy, Throttle

# ------------------------------------------------------------------- policy


def test_delay_doubles_after_the_free_failures_up_to_the_cap() -> None:
    p = DelayPolicy(free_failures=3, first_delay_s=1, max_delay_s=900)
    waits = [p.delay_s(n) for n in range(16)]
    assert waits == [0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900]
    assert p.delay_s(10**9) == 900  # no overflow however many


def test_policy_refuses_settings_that_make_no_sense() -> None:
    with pytest.raises(ValueError, match="free_failures"):
        DelayPolicy(free_failures=-1)
    with pytest.raises(ValueError, match="first_delay_s"):
        DelayPolicy(first_delay_s=10, max_delay_s=5)
    with pytest.raises(ValueError, match="forgotten"):
        DelayPolicy(max_delay_s=900, forget_after_s=60)


def test_throttle_waits_grow_and_are_measured_from_the_last_failure() -> None:
    t = Throttle(DelayPolicy(free_failures=3, first_delay_s=1, max_delay_s=900))
    for now in (0.0, 0.5, 1.0):  # three free failures
        assert t.retry_after_s("k", now) == 0
        t.failed("k", now)
    assert t.retry_after_s("k", 1.0) == 1.0  # the 3rd failure: wait 1 s
    assert t.retry_after_s("k", 1.25) == 0.75
    assert t.retry_after_s("k", 2.0) == 0
    assert t.failed("k", 2.0) == 2.0  # the 4th: 2 s from then
    assert t.retry_after_s("k", 3.0) == 1.0
    assert t.failed("k", 4.0) == 4.0  # the 5th: 4 s
    assert t.retry_after_s("k", 4.0) == 4.0
    assert t.failures("k", 4.0) == 5
    # another key is not slowed by this one
    assert t.retry_after_s("other", 4.0) == 0


def test_success_and_quiet_time_start_a_key_afresh() -> None:
    p = DelayPolicy(
        free_failures=1, first_delay_s=1, max_delay_s=60, forget_after_s=100
    )
    t = Throttle(p)
    t.failed("k", 0)
    t.failed("k", 1)
    assert t.retry_after_s("k", 1) == 2
    t.succeeded("k")
    assert t.retry_after_s("k", 1) == 0 and t.failures("k", 1) == 0
    for now in range(0, 8):
        t.failed("q", now)
    assert t.retry_after_s("q", 7) == 60
    assert t.failures("q", 106.9) == 8  # 99.9 s after the last failure
    assert t.failures("q", 107) == 0  # 100 s quiet: forgotten
    assert t.retry_after_s("q", 107) == 0


def test_a_full_table_keeps_the_keys_that_failed_most() -> None:
    p = DelayPolicy(free_failures=0, first_delay_s=1, max_delay_s=900)
    t = Throttle(p, max_keys=10)
    for n in range(20):
        t.failed("target", 0.0)
        assert n == 19 or t.retry_after_s("target", 0.0) > 0
    for i in range(1000):  # a flood of fresh keys, one failure each
        t.failed(f"flood-{i}", 1.0 + i)
    assert len(t) <= 10
    assert t.failures("target", 2000.0) == 20
    assert t.retry_after_s("target", 2.0) == 900 - 2.0


def test_login_throttle_keys_by_account_and_address() -> None:
    now = [0.0]
    s = ApiSettings(login_address_free_failures=10, login_address_max_delay_s=60)
    lt = LoginThrottle.from_settings(s, clock=lambda: now[0])
    for _ in range(3):  # an attacker at 203.0.113.9 types wrong passwords
        assert lt.retry_after_s("owner@x.test", "203.0.113.9") == 0
        lt.failed("owner@x.test", "203.0.113.9")
    assert lt.retry_after_s("owner@x.test", "203.0.113.9") == 1
    # the owner at home is not held up
    assert lt.retry_after_s("owner@x.test", "198.51.100.7") == 0
    # ... nor another account from the attacker's address (under the ceiling)
    assert lt.retry_after_s("other@x.test", "203.0.113.9") == 0
    for i in range(7):  # 10 failures from the address: its ceiling reached
        lt.failed(f"guess{i}@x.test", "203.0.113.9")
    assert lt.retry_after_s("other@x.test", "203.0.113.9") == 1
    assert lt.retry_after_s("other@x.test", "198.51.100.7") == 0
    now[0] = 1.0
    # a success clears the pair but not the address
    lt.succeeded("owner@x.test", "203.0.113.9")
    assert lt.pairs.failures(("owner@x.test", "203.0.113.9"), 1.0) == 0
    assert lt.addresses.failures("203.0.113.9", 1.0) == 10


# ---------------------------------------------------------------- passwords


def test_password_rules_each_named() -> None:
    common = frozenset({"password1234", "qwertyuiop"})

    def problem(pw: str, email: str | None = "alice.smith@example.com") -> str | None:
        return password_problem(pw, email=email, common=common)

    assert problem("x") is not None and "at least 10 characters" in str(problem("x"))
    assert "it has 9" in str(problem("123456789"))
    assert problem("correct horse battery") is None
    assert "most common" in str(problem("QwertyUIOP"))  # any case
    assert "most common" in str(problem("password1234"))
    assert "e-mail" in str(problem("my alice.smith key"))
    assert "e-mail" in str(problem("ALICE.SMITH2024"))
    # a name part under 3 characters is not looked for
    assert problem("abcdefghijk", email="ab@example.com") is None
    assert "1024 bytes" in str(problem("é" * 600))  # 1200 bytes in UTF-8
    assert problem("é" * 512) is None
    assert "valid text" in str(problem("long enough \ud800 text"))


def test_shipped_common_list() -> None:
    common = common_passwords()
    assert len(common) == 10_000
    for pw in ("password", "12345678", "qwertyuiop", "1234567890", "password123"):
        assert pw in common
    assert "correct horse battery" not in common
    assert MIN_LENGTH == 10
    for weak in ("password", "12345678", "x", "1234567890", "Password123"):
        with pytest.raises(WeakPassword, match="the password"):
            check_password(weak)
    check_password("demo-household-key", email="owner@demo.fusebox.test")


def test_weak_bootstrap_operator_password_is_refused_with_what_to_do() -> None:
    with pytest.raises(ValueError) as err:
        ApiSettings(
            bootstrap_operator_email="root@example.com",
            bootstrap_operator_password="x",  # type: ignore[arg-type]
        )
    text = str(err.value)
    assert "FUSEBOX_BOOTSTRAP_OPERATOR_PASSWORD" in text
    assert "at least 10 characters" in text
    assert "fusebox cloud user add --role operator" in text
    ApiSettings(
        bootstrap_operator_email="root@example.com",
        bootstrap_operator_password="first-password",  # type: ignore[arg-type]
    )

"""The claim code: format, alphabet and entropy, persistence, file mode, hash."""

from __future__ import annotations

import hashlib
import math
import re
import stat
from collections import Counter
from pathlib import Path

import pytest

from edge.claim import (
    ALPHABET,
    ClaimFileError,
    claim_path_beside,
    claim_sha256,
    generate_code,
    load_or_create,
    normalise,
    read_code,
)

CODE = re.compile(r"^[2-9A-HJ-NP-Z]{4}-[2-9A-HJ-NP-Z]{4}-[2-9A-HJ-NP-Z]{4}$")


def test_format_is_three_groups_of_four_unambiguous_symbols() -> None:
    for _ in range(200):
        code = generate_code()
        assert CODE.match(code), code
        assert not set(code) & set("01IO")


def test_alphabet_and_length_give_at_least_60_bits() -> None:
    assert len(set(ALPHABET)) == len(ALPHABET) == 32
    assert not set(ALPHABET) & set("01IO")
    symbols = len(generate_code().replace("-", ""))
    assert symbols * math.log2(len(ALPHABET)) >= 60


def test_codes_differ_and_use_the_whole_alphabet() -> None:
    codes = [generate_code() for _ in range(2000)]
    assert len(set(codes)) == len(codes)
    counts = Counter("".join(codes).replace("-", ""))
    assert set(counts) == set(ALPHABET)
    # 24,000 symbols over 32: 750 each expected; a biased draw would stand out
    assert min(counts.values()) > 550 and max(counts.values()) < 950


def test_created_once_then_kept(tmp_path: Path) -> None:
    path = claim_path_beside(tmp_path / "edge" / "outbox.db")
    assert path == tmp_path / "edge" / "outbox-claim.txt"
    first = load_or_create(path)
    assert CODE.match(first.code)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == first.code
    again = load_or_create(path)
    assert again == first
    assert read_code(path) == first
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp left


def test_loose_permissions_are_tightened(tmp_path: Path) -> None:
    path = tmp_path / "outbox-claim.txt"
    code = load_or_create(path).code
    path.chmod(0o644)
    assert load_or_create(path).code == code
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_sha256_is_of_the_compact_upper_case_form() -> None:
    code = "7KQM-3XHD-9TWB"
    expected = hashlib.sha256(b"7KQM3XHD9TWB").hexdigest()
    assert claim_sha256(code) == expected
    assert claim_sha256("7kqm 3xhd 9twb") == expected
    assert claim_sha256("7KQM3XHD9TWB") == expected
    assert re.fullmatch(r"[0-9a-f]{64}", expected)


def test_published_hash_matches_what_the_claim_code_file_holds(
    tmp_path: Path,
) -> None:
    claim = load_or_create(tmp_path / "c.txt")
    compact = claim.code.replace("-", "").encode()
    assert claim.sha256 == hashlib.sha256(compact).hexdigest()


@pytest.mark.parametrize(
    "text", ["", "7KQM-3XHD-9TW", "7KQM-3XHD-9TWBB", "7KQM-3XHD-9TW0", "7KQM-3XHD-9TWI"]
)
def test_not_a_code(text: str) -> None:
    with pytest.raises(ValueError, match="not a claim code"):
        normalise(text)


def test_missing_or_damaged_file_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "outbox-claim.txt"
    with pytest.raises(ClaimFileError, match="no claim code yet"):
        read_code(path)
    path.write_text("garbage\n")
    with pytest.raises(ClaimFileError, match="delete the file"):
        load_or_create(path)

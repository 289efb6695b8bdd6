"""The files kept beside the outbox: one ``StatePaths`` names them all, with the
names installed gateways already have on disk."""

from __future__ import annotations

from pathlib import Path

from edge.claim import claim_path_beside
from edge.ocpp.transactions import store_path_beside
from edge.overrides import overrides_path_beside
from edge.paths import StatePaths


def test_the_state_files_keep_their_names_on_disk() -> None:
    paths = StatePaths.beside(Path("/var/lib/fusebox/outbox.db"))
    assert paths == StatePaths(
        outbox=Path("/var/lib/fusebox/outbox.db"),
        claim=Path("/var/lib/fusebox/outbox-claim.txt"),
        overrides=Path("/var/lib/fusebox/outbox-overrides.json"),
        ocpp_transactions=Path("/var/lib/fusebox/outbox-ocpp.db"),
        lease=Path("/var/lib/fusebox/outbox-lease.msgpack"),
    )


def test_names_follow_the_outbox_stem_in_its_directory(tmp_path: Path) -> None:
    paths = StatePaths.beside(tmp_path / "edge" / "gw-7.sqlite")
    files = [paths.claim, paths.overrides, paths.ocpp_transactions, paths.lease]
    assert {p.parent for p in files} == {tmp_path / "edge"}
    assert all(p.name.startswith("gw-7-") for p in files)
    assert len(set(files)) == len(files)
    # two edges with different outboxes in one directory keep apart
    other = StatePaths.beside(tmp_path / "edge" / "gw-8.sqlite")
    assert not set(files) & {other.claim, other.overrides, other.lease}


def test_the_old_helpers_name_the_same_files(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.db"
    paths = StatePaths.beside(outbox)
    assert claim_path_beside(outbox) == paths.claim
    assert overrides_path_beside(outbox) == paths.overrides
    assert store_path_beside(outbox) == paths.ocpp_transactions


def test_state_paths_are_frozen() -> None:
    paths = StatePaths.beside(Path("outbox.db"))
    try:
        paths.claim = Path("elsewhere")  # type: ignore[misc]
    except AttributeError:
        pass
    else:
        raise AssertionError("StatePaths must be immutable")

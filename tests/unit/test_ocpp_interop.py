"""The README's OCPP interop matrix is the one the code generates
(``edge.ocpp.interop``), and the facts it is generated from hold together.
``tests/component/test_ocpp_interop_live.py`` checks every row against a real server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.ocpp import lib
from edge.ocpp.interop import (
    _COMMANDS,
    CHARGER_INITIATED,
    MATRIX_BEGIN,
    MATRIX_END,
    VERSIONS,
    commands_sent,
    matrix_markdown,
    readme_matrix,
)
from edge.ocpp.routes import CHARGE_POINT_CLASSES
from edge.ocpp.server import OcppServer

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_matrix_is_the_generated_one() -> None:
    text = README.read_text(encoding="utf-8")
    assert readme_matrix(text) == matrix_markdown().strip(), (
        "README.md's interop matrix differs from the code: paste the output of "
        f"`python -m edge.ocpp.interop` between {MATRIX_BEGIN} and {MATRIX_END}"
    )


def test_readme_matrix_needs_both_markers_in_order() -> None:
    assert readme_matrix(f"x\n{MATRIX_BEGIN}\n| a |\n{MATRIX_END}\n") == "| a |"
    for text in ("", MATRIX_BEGIN, MATRIX_END, f"{MATRIX_END}\n{MATRIX_BEGIN}"):
        with pytest.raises(ValueError, match="interop matrix"):
            readme_matrix(text)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_edge_serves_and_sends_within_the_spec_directions(version: str) -> None:
    known = lib.known_actions(version)
    by_charger = CHARGER_INITIATED[version]
    assert by_charger <= known
    routed = lib.routed_actions(CHARGE_POINT_CLASSES[version])
    # only what a charger sends is routed, and every route is a known action
    assert routed <= by_charger, routed - by_charger
    sent = commands_sent(version)
    assert set(sent) <= known - by_charger, set(sent) & by_charger
    for command in _COMMANDS:
        assert callable(getattr(OcppServer, command.method, None)), command.method


def test_the_matrix_names_every_action_of_both_versions() -> None:
    text = matrix_markdown()
    for version in VERSIONS:
        for action in lib.known_actions(version):
            assert (
                f"| {action} |" in text
                or f" {action}," in text
                or (f" {action}." in text)
            ), action
    # the rows that changed with issue 10
    assert (
        "| Heartbeat | handled | handled | 1.6: answered; 2.0.1: `SecurityError`"
        in (text)
    )
    assert "| SignCertificate | refused: `NotSupported` |" in text

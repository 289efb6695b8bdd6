"""The fuse guard's headroom and water-filling allocation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.fuse import Draw, allocate, phase_headroom_a


def test_headroom_subtracts_the_house_not_the_evs() -> None:
    # 60 A fuse, 1 A margin, house 2300 W + EV 7360 W seen by the meter
    (room,) = phase_headroom_a(
        main_fuse_a=60,
        margin_a=1,
        site_phases=1,
        voltage_v=230,
        import_w=[2300 + 7360],
        ev_draw_w=[7360],
    )
    assert room == pytest.approx(49.0)
    # an 8 kW spike on top leaves 49 - 34.8 = 14.2 A
    (room,) = phase_headroom_a(
        main_fuse_a=60,
        margin_a=1,
        site_phases=1,
        voltage_v=230,
        import_w=[2300 + 8000 + 7360],
        ev_draw_w=[7360],
    )
    assert room == pytest.approx(49.0 - 8000 / 230)


def test_total_import_is_spread_over_three_phases() -> None:
    rooms = phase_headroom_a(
        main_fuse_a=40,
        margin_a=0,
        site_phases=3,
        voltage_v=230,
        import_w=[3 * 230 * 10],
        ev_draw_w=[0],
    )
    assert rooms == pytest.approx([30, 30, 30])
    rooms = phase_headroom_a(
        main_fuse_a=40,
        margin_a=0,
        site_phases=3,
        voltage_v=230,
        import_w=[230 * 35, 0, -230 * 5],
        ev_draw_w=[0, 0, 0],
    )
    assert rooms == pytest.approx([5, 40, 45])  # export on L3 is room


def test_one_ev_gets_what_it_wants_when_it_fits_else_the_room() -> None:
    assert allocate([40], [Draw("a", 32)], site_phases=1) == {"a": 32}
    assert allocate([14.2], [Draw("a", 32)], site_phases=1) == {
        "a": pytest.approx(14.2)
    }
    assert allocate([5.9], [Draw("a", 32)], site_phases=1) == {"a": 0.0}  # paused


def test_two_evs_share_equally_and_leftover_goes_to_the_hungrier() -> None:
    out = allocate([30], [Draw("a", 32), Draw("b", 32)], site_phases=1)
    assert out == {"a": pytest.approx(15), "b": pytest.approx(15)}
    out = allocate([30], [Draw("a", 8), Draw("b", 32)], site_phases=1)
    assert out == {"a": pytest.approx(8), "b": pytest.approx(22)}


def test_when_not_all_fit_one_pauses_and_the_other_keeps_charging() -> None:
    out = allocate([10], [Draw("a", 16), Draw("b", 32)], site_phases=1)
    assert out == {"a": 0.0, "b": pytest.approx(10)}


def test_three_phase_charger_is_bound_by_its_tightest_phase() -> None:
    out = allocate(
        [10, 30, 30],
        [Draw("three", 32, phases=3), Draw("l2", 32, phases=1, phase=2)],
        site_phases=3,
    )
    assert out["three"] == pytest.approx(10)
    assert out["l2"] == pytest.approx(20)


def test_an_ev_that_wants_nothing_gets_nothing() -> None:
    assert allocate([40], [Draw("a", 0)], site_phases=1) == {"a": 0.0}


@given(
    rooms=st.lists(st.floats(0, 100), min_size=3, max_size=3),
    wants=st.lists(
        st.tuples(st.floats(0, 32), st.sampled_from([1, 3]), st.integers(1, 3)),
        min_size=1,
        max_size=6,
    ),
)
def test_allocation_never_exceeds_a_phase_or_a_want(
    rooms: list[float], wants: list[tuple[float, int, int]]
) -> None:
    draws = [Draw(f"c{i}", w, phases=p, phase=ph) for i, (w, p, ph) in enumerate(wants)]
    out = allocate(rooms, draws, site_phases=3)
    used = [0.0, 0.0, 0.0]
    for d in draws:
        got = out[d.charger_id]
        assert got == 0.0 or d.min_a - 1e-6 <= got <= d.wanted_a + 1e-6
        for p in d.on(3):
            used[p - 1] += got
    for p in range(3):
        assert used[p] <= rooms[p] + 1e-6

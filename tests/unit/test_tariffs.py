"""Tariffs, carbon curves, their file formats and the sample-year generator."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from cloud.tariffs import FileTariffSource, load_curve
from protocols.planning import (
    SLOT,
    CurveFormatError,
    CurveRangeError,
    DynamicTariff,
    FlatTariff,
    SlotCurve,
    TariffSource,
    TimeOfUseTariff,
    TouWindow,
    curve_to_csv,
    floor_slot,
    generate_sample_year,
    parse_curve_csv,
    parse_curve_json,
)

T0 = datetime(2025, 3, 1, tzinfo=UTC)

GOOD_CSV = """# Agile-like prices
slot_start,price_p_per_kwh,region
2025-03-01T00:00Z,12.5,C
2025-03-01T00:30Z,-1.25,C

2025-03-01T01:00+00:00,30,C
"""


def test_csv_is_parsed() -> None:
    c = parse_curve_csv(GOOD_CSV)
    assert c.start == T0
    assert c.values == (12.5, -1.25, 30.0)
    assert c.end == T0 + 3 * SLOT
    assert c.at(T0 + timedelta(minutes=45)) == -1.25
    with pytest.raises(CurveRangeError):
        c.at(T0 + 3 * SLOT)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("slot_start,price\n", "no 'price_p_per_kwh' column"),
        (
            "slot_start,price_p_per_kwh\n2025-03-01T00:00Z,12\n2025-03-01T00:30Z,abc\n",
            r"line 3: field 'price_p_per_kwh': 'abc' is not a number",
        ),
        (
            "slot_start,price_p_per_kwh\n2025-03-01 00:00,12\n",
            r"line 2: field 'slot_start'.*offset",
        ),
        (
            "slot_start,price_p_per_kwh\nyesterday,12\n",
            r"line 2: field 'slot_start': 'yesterday'",
        ),
        (
            "slot_start,price_p_per_kwh\n2025-03-01T00:00Z,1\n2025-03-01T01:00Z,2\n",
            r"line 3: .*gap",
        ),
        (
            "slot_start,price_p_per_kwh\n2025-03-01T00:00Z,1\n2025-03-01T00:00Z,2\n",
            r"line 3: .*duplicate",
        ),
        (
            "slot_start,price_p_per_kwh\n2025-03-01T00:10Z,1\n",
            r"line 2: .*boundary",
        ),
        ("slot_start,price_p_per_kwh\n2025-03-01T00:00Z\n", r"line 2: 1 fields"),
        ("slot_start,price_p_per_kwh\n2025-03-01T00:00Z,nan\n", r"line 2: .*finite"),
        ("", "empty"),
    ],
)
def test_bad_csv_names_the_line_and_field(text: str, message: str) -> None:
    with pytest.raises(CurveFormatError, match=message):
        parse_curve_csv(text, source="prices.csv")


def test_json_both_forms() -> None:
    a = parse_curve_json(
        '{"unit": "gCO2/kWh", "start": "2025-03-01T00:00Z", "values": [100, 90]}',
        unit="gCO2/kWh",
    )
    b = parse_curve_json(
        '{"unit": "gCO2/kWh", "slots": ['
        '{"slot_start": "2025-03-01T00:00Z", "value": 100},'
        '{"slot_start": "2025-03-01T00:30Z", "value": 90}]}'
    )
    assert a == b
    assert a.unit == "gCO2/kWh"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"start": "2025-03-01T00:00Z",\n "values": [1,]}', r"line 2 column"),
        ("[1, 2]", "JSON object"),
        ('{"start": "2025-03-01T00:00Z", "values": [1, "x"]}', r"values\[1\]"),
        (
            '{"slots": [{"slot_start": "2025-03-01T00:00Z", "value": 1},'
            ' {"slot_start": "2025-03-01T00:30Z"}]}',
            r"slots\[1\]: field 'value'",
        ),
        (
            '{"slots": [{"slot_start": 5, "value": 1}]}',
            r"slots\[0\]: field 'slot_start'",
        ),
        ('{"unit": "W", "start": "2025-03-01T00:00Z", "values": [1]}', "unit"),
        ('{"prices": []}', "'values' list or a 'slots' list"),
    ],
)
def test_bad_json_names_the_item(text: str, message: str) -> None:
    with pytest.raises(CurveFormatError, match=message):
        parse_curve_json(text, unit="p/kWh")


def test_files_round_trip(tmp_path: Path) -> None:
    curve = SlotCurve(T0, (1.5, 2.25, -3.0))
    csv_path = tmp_path / "p.csv"
    csv_path.write_text(curve_to_csv(curve, "price_p_per_kwh"))
    assert load_curve(csv_path) == curve
    json_path = tmp_path / "p.json"
    json_path.write_text('{"start": "2025-03-01T00:00Z", "values": [1.5, 2.25, -3]}')
    assert load_curve(json_path) == curve


async def test_file_source_fetches_the_window(tmp_path: Path) -> None:
    curve = SlotCurve(T0, tuple(float(i) for i in range(48)))
    path = tmp_path / "day.csv"
    path.write_text(curve_to_csv(curve, "price_p_per_kwh"))
    source = FileTariffSource(path)
    assert isinstance(source, TariffSource)
    got = await source.fetch(T0 + timedelta(hours=2), T0 + timedelta(hours=3))
    assert got.start == T0 + timedelta(hours=2)
    assert got.values == (4.0, 5.0)
    # beyond what is published: truncated, not an error
    tail = await source.fetch(T0 + timedelta(hours=23), T0 + timedelta(hours=30))
    assert tail.values == (46.0, 47.0)


def test_time_of_use_window_crosses_midnight() -> None:
    go = TimeOfUseTariff.go_like()  # 7.5 p 23:30-05:30, else 27 p
    day = datetime(2025, 1, 10, tzinfo=UTC)
    assert go.price_at(day + timedelta(hours=23)) == 27.0
    assert go.price_at(day + timedelta(hours=23, minutes=30)) == 7.5
    assert go.price_at(day + timedelta(hours=24)) == 7.5
    assert go.price_at(day + timedelta(hours=5)) == 7.5
    assert go.price_at(day + timedelta(hours=5, minutes=30)) == 27.0
    assert go.price_at(day + timedelta(hours=12)) == 27.0
    curve = go.curve(day, day + timedelta(days=1))
    assert len(curve) == 48
    assert sum(1 for v in curve.values if v == 7.5) == 12


def test_time_of_use_in_local_time_follows_summer_time() -> None:
    go = TimeOfUseTariff(
        27.0, (TouWindow(time(0, 30), time(4, 30), 9.0),), "Europe/London"
    )
    summer = datetime(2025, 7, 1, tzinfo=UTC)
    assert go.price_at(summer - timedelta(minutes=30)) == 9.0  # 00:30 BST
    assert go.price_at(summer + timedelta(hours=3, minutes=30)) == 27.0  # 04:30 BST
    winter = datetime(2025, 1, 1, tzinfo=UTC)
    assert go.price_at(winter + timedelta(minutes=30)) == 9.0
    assert go.price_at(winter + timedelta(hours=4)) == 9.0


def test_flat_and_dynamic() -> None:
    flat = FlatTariff(24.5)
    assert flat.price_at(T0) == 24.5
    assert flat.curve(T0 + timedelta(minutes=10), T0 + SLOT * 2).values == (24.5, 24.5)
    dyn = DynamicTariff(SlotCurve(T0, (1.0, 2.0, 3.0)))
    assert dyn.price_at(T0 + SLOT) == 2.0
    assert dyn.curve(T0 + SLOT, T0 + SLOT * 3).values == (2.0, 3.0)
    with pytest.raises(CurveRangeError):
        dyn.curve(T0, T0 + SLOT * 4)


def test_slot_helpers() -> None:
    assert floor_slot(T0 + timedelta(minutes=44, seconds=3)) == T0 + SLOT
    with pytest.raises(ValueError, match="naive"):
        floor_slot(datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="slot start"):
        SlotCurve(T0 + timedelta(minutes=5), (1.0,))


# ------------------------------------------------------------------ sample year


@pytest.fixture(scope="module")
def year() -> tuple[SlotCurve, SlotCurve]:
    y = generate_sample_year(seed=2025)
    return y.prices, y.carbon


def _by_hours(curve: SlotCurve, lo: float, hi: float) -> list[float]:
    return [v for i, v in enumerate(curve.values) if lo <= (i % 48) / 2 < hi]


def test_sample_year_shape(year: tuple[SlotCurve, SlotCurve]) -> None:
    prices, carbon = year
    assert len(prices) == len(carbon) == 365 * 48
    overnight = statistics.mean(_by_hours(prices, 0, 5))
    peak = statistics.mean(_by_hours(prices, 16, 19))
    assert overnight < 0.5 * peak
    jan = statistics.mean(prices.values[: 31 * 48])
    jul = statistics.mean(prices.values[181 * 48 : 212 * 48])
    assert jan > jul * 1.2
    negatives = sum(1 for v in prices.values if v < 0)
    assert 20 < negatives < 2000
    assert all(20 <= v <= 600 for v in carbon.values)
    assert statistics.mean(_by_hours(carbon, 0, 5)) < statistics.mean(
        _by_hours(carbon, 16, 20)
    )
    # windy days are cheap and green together
    assert statistics.correlation(prices.values, carbon.values) > 0.4


def test_sample_year_is_deterministic() -> None:
    a = generate_sample_year(seed=7, days=3)
    b = generate_sample_year(seed=7, days=3)
    c = generate_sample_year(seed=8, days=3)
    assert a == b
    assert a.prices.values != c.prices.values


def test_shipped_files_are_the_generated_year(
    year: tuple[SlotCurve, SlotCurve],
) -> None:
    data = Path(__file__).resolve().parents[2] / "fusebox" / "data"
    prices = load_curve(data / "sample_prices_2025.csv")
    carbon = load_curve(data / "sample_carbon_2025.csv", "carbon_g_per_kwh", "gCO2/kWh")
    assert prices == year[0]
    assert carbon == year[1]

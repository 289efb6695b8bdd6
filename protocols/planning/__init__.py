"""Smart-charging planning: tariffs, carbon, sample data and the joint planner.

Pure (no I/O but the curve-file loaders, no clock): ``now`` is always a parameter.

* :mod:`protocols.planning.tariffs`: half-hourly curves, dynamic / time-of-use / flat
  tariffs, CSV and JSON loaders, the tariff-source interface.
* :mod:`protocols.planning.samples`: a seeded generator of a UK-like year of prices
  and carbon intensity.
* :mod:`protocols.planning.planner`: the joint ready-by planner under a site limit.
"""

from __future__ import annotations

from protocols.planning.planner import (
    BadRequests,
    ChargerPlan,
    EvRequest,
    Objective,
    Plan,
    PlanInputError,
    PlanningError,
    SchedulePeriod,
    SiteLimit,
    plan_charging,
    slot_starts,
)
from protocols.planning.samples import SampleYear, generate_sample_year
from protocols.planning.tariffs import (
    CARBON_UNIT,
    PRICE_UNIT,
    SLOT,
    SLOT_HOURS,
    CurveFormatError,
    CurveRangeError,
    DynamicTariff,
    FlatTariff,
    HttpTariffSource,
    SlotCurve,
    Tariff,
    TariffSource,
    TimeOfUseTariff,
    TouWindow,
    curve_to_csv,
    floor_slot,
    parse_curve,
    parse_curve_csv,
    parse_curve_json,
    tariff_curve,
)

__all__ = [
    "CARBON_UNIT",
    "PRICE_UNIT",
    "SLOT",
    "SLOT_HOURS",
    "BadRequests",
    "ChargerPlan",
    "CurveFormatError",
    "CurveRangeError",
    "DynamicTariff",
    "EvRequest",
    "FlatTariff",
    "HttpTariffSource",
    "Objective",
    "Plan",
    "PlanInputError",
    "PlanningError",
    "SampleYear",
    "SchedulePeriod",
    "SiteLimit",
    "SlotCurve",
    "Tariff",
    "TariffSource",
    "TimeOfUseTariff",
    "TouWindow",
    "curve_to_csv",
    "floor_slot",
    "generate_sample_year",
    "parse_curve",
    "parse_curve_csv",
    "parse_curve_json",
    "plan_charging",
    "slot_starts",
    "tariff_curve",
]

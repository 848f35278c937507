"""Guarantee schedules: format 1 parsed strictly, stored as dated versions."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from rempart.coverage.schedule import ScheduleError, canonical_json, parse_schedule, schedule_digest
from rempart.platform import Platform
from rempart.registry import service

from feedkit import AMC_A, SIREN_A

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "coverage.json"


def vector_schedules() -> list[dict[str, object]]:
    if not VECTORS.exists():
        pytest.skip("shared/vectors is not beside this checkout")
    return [case["schedule"] for case in json.loads(VECTORS.read_text())["cases"]]


def test_every_vector_schedule_parses_and_round_trips() -> None:
    for raw in vector_schedules():
        schedule = parse_schedule(raw)
        again = parse_schedule(canonical_json(schedule))
        assert schedule_digest(again) == schedule_digest(schedule)
        assert canonical_json(schedule)["rules"][0]["domain"] == raw["rules"][0]["domain"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("raw", "path", "reason"),
    [
        ({"code": "X", "rules": []}, "rules", "at least 1"),
        ({"code": "X", "rules": [{"domain": "pharmacy", "kind": "flat"}]}, "rules.0", "needs 'amount'"),
        ({"code": "X", "rules": [{"domain": "pharmacy", "kind": "br_percent_incl"}]}, "rules.0", "needs 'percent'"),
        ({"code": "X", "rules": [{"domain": "Pharmacy!", "kind": "real_cost"}]}, "rules.0.domain", "lowercase"),
        (
            {"code": "X", "rules": [{"domain": "optical", "kind": "flat", "amount": "-1"}]},
            "rules.0.amount",
            "non-negative",
        ),
        ({"code": "X", "rules": [{"domain": "optical", "kind": "magic"}]}, "rules.0.kind", "Input should be"),
        ({"code": "X", "rules": [{"domain": "optical", "kind": "real_cost", "colour": 1}]}, "rules.0.colour", "Extra"),
        (
            {
                "code": "X",
                "rules": [{"domain": "a1", "kind": "real_cost"}],
                "ceilings": [{"domain": "a1", "amount": "5"}],
            },
            "ceilings.0.per",
            "required",
        ),
    ],
)
def test_invalid_schedules_name_the_field(raw: dict[str, object], path: str, reason: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_schedule(raw)
    assert any(p == path and reason in r for p, r in info.value.problems), info.value.problems


@pytest.mark.integration
def test_versions_close_the_previous_one_and_refuse_overlaps(platform: Platform) -> None:
    base = {"code": "ESS", "rules": [{"domain": "pharmacy", "kind": "br_percent_incl", "percent": 100}]}
    richer = {"code": "ESS", "rules": [{"domain": "pharmacy", "kind": "br_percent_incl", "percent": 150}]}
    with platform.session() as session:
        service.register_insurer(session, platform.keystore, amc_number=AMC_A, name="A", siren=SIREN_A)
        assert service.load_schedule(session, amc_number=AMC_A, data=base, valid_from=dt.date(2025, 1, 1)).changed
        assert not service.load_schedule(session, amc_number=AMC_A, data=base, valid_from=dt.date(2025, 1, 1)).changed
        service.load_schedule(session, amc_number=AMC_A, data=richer, valid_from=dt.date(2026, 1, 1))
        contract = service.ensure_contract(session, insurer=service.get_insurer(session, AMC_A), code="ESS")
        old = service.schedule_on(session, contract_id=contract.id, day=dt.date(2025, 12, 31))
        new = service.schedule_on(session, contract_id=contract.id, day=dt.date(2026, 1, 1))
        assert old is not None and old["rules"][0]["percent"] == 100
        assert new is not None and new["rules"][0]["percent"] == 150
        with pytest.raises(service.RegistryError, match="overlaps"):
            service.load_schedule(session, amc_number=AMC_A, data=base, valid_from=dt.date(2025, 6, 1),
                                  valid_to=dt.date(2026, 6, 1))  # fmt: skip

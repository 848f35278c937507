"""Coverage test vectors (format 1 of shared/vectors/README.md): read a case, run it, compare.

Pure: takes the decoded JSON. A case that cannot be read is reported as failing with the
field at fault, never skipped.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from rempart.coverage.compute import Consumed, Line, LineShare, Period, share
from rempart.coverage.schedule import ScheduleError, parse_schedule

VECTORS_FORMAT = 1


class CaseError(ValueError):
    """A case is not in the vectors format; the message names the field."""


@dataclass
class CaseResult:
    id: str
    passed: bool
    problems: list[str] = field(default_factory=list)
    computed: list[LineShare] = field(default_factory=list)


def _amount(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise CaseError(f'{where}: expected an amount such as "12.30"')
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise CaseError(f"{where}: {value!r} is not an amount") from None
    if not amount.is_finite() or abs(amount) > Decimal("1e12"):
        raise CaseError(f"{where}: {value!r} is not a plausible amount")
    if amount != amount.quantize(Decimal("0.01")):
        raise CaseError(f"{where}: {value!r} has more than two decimals")
    return amount


def _rate(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise CaseError(f"{where}: expected a percentage")
    try:
        rate = Decimal(str(value))
    except InvalidOperation:
        raise CaseError(f"{where}: {value!r} is not a percentage") from None
    if not rate.is_finite() or not 0 <= rate <= 100:
        raise CaseError(f"{where}: {value!r} is not a percentage between 0 and 100")
    return rate


def _date(value: Any, where: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise CaseError(f"{where}: {value!r} is not an ISO date") from None


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise CaseError(f"{where}: expected a non-empty string")
    return value


def read_line(raw: Any, where: str) -> Line:
    if not isinstance(raw, dict):
        raise CaseError(f"{where}: expected an object")
    for name in ("domain", "act", "date", "price", "br", "amo_rate"):
        if name not in raw:
            raise CaseError(f"{where}.{name}: missing")
    basket = raw.get("basket")
    return Line(
        domain=_text(raw["domain"], f"{where}.domain"),
        act=_text(raw["act"], f"{where}.act"),
        date=_date(raw["date"], f"{where}.date"),
        price=_amount(raw["price"], f"{where}.price"),
        br=_amount(raw["br"], f"{where}.br"),
        amo_rate=_rate(raw["amo_rate"], f"{where}.amo_rate"),
        amo_deductible=_amount(raw.get("amo_deductible", "0.00"), f"{where}.amo_deductible"),
        basket=None if basket is None else _text(basket, f"{where}.basket"),
    )


def read_consumed(raw: Any, where: str) -> Consumed:
    if not isinstance(raw, dict):
        raise CaseError(f"{where}: expected an object")
    for name in ("domain", "date", "amount"):
        if name not in raw:
            raise CaseError(f"{where}.{name}: missing")
    return Consumed(
        domain=_text(raw["domain"], f"{where}.domain"),
        act=str(raw.get("act", "")),
        date=_date(raw["date"], f"{where}.date"),
        amount=_amount(raw["amount"], f"{where}.amount"),
    )


def read_period(raw: Any, where: str) -> Period:
    if not isinstance(raw, dict) or "start" not in raw:
        raise CaseError(f"{where}: expected an object with 'start' (and 'end')")
    end = raw.get("end")
    return Period(_date(raw["start"], f"{where}.start"), None if end is None else _date(end, f"{where}.end"))


def run_case(case: Any, position: int) -> CaseResult:
    """Compute a case and compare every line's amo, amc, patient (and reason where given)."""
    named = isinstance(case, dict) and isinstance(case.get("id"), str)
    case_id: str = case["id"] if named else f"case #{position}"
    try:
        if not isinstance(case, dict):
            raise CaseError("expected an object")
        try:
            schedule = parse_schedule(case.get("schedule"))
        except ScheduleError as exc:
            raise CaseError(f"schedule: {exc}") from None
        lines = [read_line(raw, f"lines[{i}]") for i, raw in enumerate(_list(case, "lines"))]
        consumption = [read_consumed(raw, f"consumption[{i}]") for i, raw in enumerate(_list(case, "consumption", []))]
        coverage = None
        if "coverage" in case:
            coverage = [read_period(raw, f"coverage[{i}]") for i, raw in enumerate(_list(case, "coverage"))]
        expected = case.get("expected")
        expected_lines = _list(expected, "lines") if isinstance(expected, dict) else None
        if expected_lines is None or len(expected_lines) != len(lines):
            raise CaseError("expected.lines: one expected result per line is needed")
    except CaseError as exc:
        return CaseResult(case_id, False, [f"unreadable: {exc}"])
    computed = share(schedule, lines, consumption=consumption, coverage=coverage)
    problems = []
    for index, (want, got) in enumerate(zip(expected_lines, computed, strict=True)):
        for name in ("amo", "amc", "patient"):
            try:
                wanted = _amount(want.get(name) if isinstance(want, dict) else None, f"expected.lines[{index}].{name}")
            except CaseError as exc:
                problems.append(f"unreadable: {exc}")
                continue
            if getattr(got, name) != wanted:
                problems.append(f"line {index + 1} {name}: expected {wanted}, computed {getattr(got, name)}")
        if isinstance(want, dict) and "reason" in want and want["reason"] != got.reason:
            problems.append(f"line {index + 1} reason: expected {want['reason']}, computed {got.reason}")
    return CaseResult(case_id, not problems, problems, computed)


def _list(container: Any, name: str, default: list[Any] | None = None) -> list[Any]:
    value = container.get(name, default) if isinstance(container, dict) else default
    if not isinstance(value, list):
        raise CaseError(f"{name}: expected a list")
    return value


def run_file(document: Any) -> list[CaseResult]:
    if not isinstance(document, dict) or not isinstance(document.get("cases"), list):
        raise CaseError("a vectors file is an object with a 'cases' list")
    if document.get("format", VECTORS_FORMAT) != VECTORS_FORMAT:
        raise CaseError(f"format {document.get('format')!r} is not supported (expected {VECTORS_FORMAT})")
    return [run_case(case, position) for position, case in enumerate(document["cases"], start=1)]

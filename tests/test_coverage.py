"""The AMC share: the vectors pass, the money rules hold for any schedule, the CLI reports."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rempart.coverage.compute import Consumed, Line, Period, cents, share
from rempart.coverage.schedule import parse_schedule
from rempart.coverage.vectors import CaseError, run_case, run_file

DATA = Path(__file__).resolve().parent / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "coverage.json"
# The shared vectors (a copy is kept here, so a checkout alone runs them), and the project's own.
VECTOR_FILES = [DATA / "coverage.json", DATA / "coverage_more.json", *([SHARED] if SHARED.exists() else [])]


@pytest.mark.parametrize("path", VECTOR_FILES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_every_vector_passes(path: Path) -> None:
    results = run_file(json.loads(path.read_text()))
    assert results
    assert [(r.id, r.problems) for r in results if not r.passed] == []


def test_a_wrong_expectation_is_reported_with_the_line_and_amount() -> None:
    case = json.loads((DATA / "coverage.json").read_text())["cases"][0]
    case["expected"]["lines"][0]["amc"] = "3.49"
    result = run_case(case, 1)
    assert not result.passed
    assert result.problems == ["line 1 amc: expected 3.49, computed 3.50"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["lines"][0].update(price="10.001"), "lines[0].price: '10.001' has more than two decimals"),
        (lambda c: c["lines"][0].pop("br"), "lines[0].br: missing"),
        (lambda c: c["lines"][0].update(date="02/03/2026"), "lines[0].date: '02/03/2026' is not an ISO date"),
        (lambda c: c["lines"][0].update(amo_rate=165), "lines[0].amo_rate: 165 is not a percentage"),
        (lambda c: c["schedule"]["rules"][0].update(kind="bonus"), "schedule: rules.0.kind"),
        (lambda c: c["expected"]["lines"].append({}), "expected.lines: one expected result per line"),
    ],
)
def test_an_unreadable_case_fails_and_names_the_field(change: object, message: str) -> None:
    case = json.loads((DATA / "coverage.json").read_text())["cases"][0]
    change(case)  # type: ignore[operator]
    result = run_case(case, 1)
    assert not result.passed
    assert message in result.problems[0]


def test_a_file_that_is_not_vectors_is_refused() -> None:
    with pytest.raises(CaseError, match="'cases' list"):
        run_file({"format": 1})
    with pytest.raises(CaseError, match="format 2"):
        run_file({"format": 2, "cases": []})


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rempart.cli.main", *args], capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_the_cli_prints_one_line_per_case_then_a_summary(tmp_path: Path) -> None:
    done = run_cli("coverage", "check", str(DATA / "coverage.json"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == {"cases": 15, "passed": 15}
    assert all(line.startswith("pass ") for line in lines[:-1])

    document = json.loads((DATA / "coverage.json").read_text())
    document["cases"][2]["expected"]["lines"][0]["patient"] = "1.00"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(document))
    done = run_cli("coverage", "check", str(broken))
    assert done.returncode == 1
    assert "FAIL pharmacy-quantity" in done.stdout
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"cases": 15, "passed": 14}

    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    assert run_cli("coverage", "check", str(garbage)).returncode == 2


# -- properties over any schedule ----------------------------------------------------------------

DOMAINS = ("pharmacy", "optical", "dental")
ACTS = ("a", "b")
money = st.integers(0, 200_000).map(lambda c: Decimal(c) / 100)
days = st.dates(dt.date(2024, 1, 1), dt.date(2027, 12, 31))


@st.composite
def rules(draw: st.DrawFn) -> dict[str, object]:
    kind = draw(st.sampled_from(["br_percent_incl", "br_percent_extra", "flat", "real_cost"]))
    rule: dict[str, object] = {"domain": draw(st.sampled_from(DOMAINS)), "kind": kind}
    if kind.startswith("br_percent"):
        rule["percent"] = draw(st.integers(0, 500))
    if kind == "flat":
        rule["amount"] = str(draw(money))
        rule["per"] = draw(st.sampled_from(["act", "calendar_year", "2y"]))
    if draw(st.booleans()):
        rule["acts"] = [draw(st.sampled_from(ACTS))]
    if draw(st.booleans()):
        rule["plus_flat"] = str(draw(money))
    return rule


schedules = st.builds(
    lambda rules, ceilings: parse_schedule({"code": "P", "rules": rules, "ceilings": ceilings}),
    st.lists(rules(), min_size=1, max_size=4),
    st.lists(
        st.fixed_dictionaries(
            {
                "domain": st.sampled_from(DOMAINS),
                "amount": money.map(str),
                "per": st.sampled_from(["calendar_year", "2y"]),
            }
        ),
        max_size=2,
    ),
)


@st.composite
def lines(draw: st.DrawFn) -> Line:
    br = draw(money)
    rate = Decimal(draw(st.sampled_from([0, 15, 30, 60, 65, 70, 80, 100])))
    amo = cents(br * rate / 100)  # half up, as the rules say (481.35 at 30% is 144.41, not 144.40)
    price = amo + draw(money)  # a professional never charges less than the mandatory scheme pays
    deductible = min(amo, draw(st.sampled_from([Decimal(0), Decimal(1), Decimal(2)])))
    return Line(draw(st.sampled_from(DOMAINS)), draw(st.sampled_from(ACTS)), draw(days), price, br, rate, deductible)


consumptions = st.lists(st.builds(Consumed, st.sampled_from(DOMAINS), st.sampled_from(ACTS), days, money), max_size=4)


@settings(max_examples=300, deadline=None)
@given(schedules, st.lists(lines(), min_size=1, max_size=6), consumptions)
def test_money_rules_hold_for_any_schedule(schedule: object, invoice: list[Line], consumed: list[Consumed]) -> None:
    results = share(schedule, invoice, consumption=consumed)  # type: ignore[arg-type]
    for line, result in zip(invoice, results, strict=True):
        for amount in (result.amo, result.amc, result.patient):
            assert amount == amount.quantize(Decimal("0.01"))
        assert result.amc >= 0
        assert result.amo + result.amc <= line.price
        assert result.patient == line.price - (result.amo - line.amo_deductible) - result.amc
        assert result.patient >= line.amo_deductible  # the complementary never pays the deductible
    # No ceiling is ever exceeded by the invoice's lines, whatever was consumed before.
    for ceiling in schedule.ceilings:  # type: ignore[attr-defined]
        for index, line in enumerate(invoice):
            if line.domain != ceiling.domain:
                continue
            window = [
                r.amc for other, r in zip(invoice[: index + 1], results, strict=False)
                if other.domain == ceiling.domain and _in_period(other.date, line.date, ceiling.per)
            ]  # fmt: skip
            before = sum(
                (
                    c.amount
                    for c in consumed
                    if c.domain == ceiling.domain and _in_period(c.date, line.date, ceiling.per)
                ),
                Decimal(0),
            )
            assert sum(window, Decimal(0)) <= max(Decimal(0), ceiling.amount - before) or results[index].amc == 0


def _in_period(day: dt.date, reference: dt.date, per: str) -> bool:
    if per == "calendar_year":
        return day.year == reference.year
    try:
        start = reference.replace(year=reference.year - 2)
    except ValueError:
        start = reference.replace(year=reference.year - 2, day=28)
    return start < day <= reference


def test_coverage_periods_decide_before_any_rule() -> None:
    schedule = parse_schedule({"code": "P", "rules": [{"domain": "pharmacy", "kind": "real_cost"}]})
    line = Line("pharmacy", "PHA", dt.date(2026, 3, 1), Decimal("10.00"), Decimal("10.00"), Decimal(65))
    assert share(schedule, [line], coverage=[])[0].reason == "no_coverage_on_date"
    assert share(schedule, [line], coverage=[Period(dt.date(2026, 3, 1), dt.date(2026, 3, 1))])[0].amc == Decimal(
        "3.50"
    )
    assert share(schedule, [line])[0].amc == Decimal("3.50")

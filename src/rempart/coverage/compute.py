"""The complementary (AMC) share of an invoice or quote, computation version 1.

Pure: values in, values out (shared/vectors/README.md is the specification). Amounts are
`Decimal` euros, each rounded half up to the cent as soon as it is computed.

For each line, in order:
1. `amo = round(br × amo_rate / 100)`; the mandatory scheme pays `amo − amo_deductible`, and
   the deductible is never the complementary's to pay.
2. A line dated outside every coverage period gets nothing (`no_coverage_on_date`).
3. The first rule whose domain and filters (acts, AMO rates, basket) match applies; none: nothing
   (`no_guarantee`).
4. The rule's kind gives the AMC amount; `plus_flat` is added; the result is capped by what the
   mandatory scheme leaves (`price − amo`), by a period flat's remaining budget, then by every
   ceiling that applies. A period's budget counts earlier consumption and the earlier lines of
   the same invoice (what they were actually granted).

Periods: `calendar_year` is the calendar year of the line's date (all of it: a late invoice for
May still sees what was paid in December); `2y` is the two years ending on the line's date,
from the day after the same date two years before, to that date included.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from rempart.coverage.schedule import Ceiling, Rule, Schedule

CENT = Decimal("0.01")
ZERO = Decimal("0.00")

NO_GUARANTEE = "no_guarantee"
NO_COVERAGE_ON_DATE = "no_coverage_on_date"


def cents(amount: Decimal) -> Decimal:
    """Half up to the cent (0.845 → 0.85), never banker's rounding."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class Line:
    """One act or item of an invoice or quote."""

    domain: str
    act: str
    date: dt.date
    price: Decimal  # what the professional charges
    br: Decimal  # the mandatory scheme's tariff base
    amo_rate: Decimal  # percent of `br` the mandatory scheme pays
    amo_deductible: Decimal = ZERO  # participation forfaitaire or franchise it withholds
    basket: str | None = None  # "100_sante" for items of the 100% Santé baskets


@dataclass(frozen=True, slots=True)
class Consumed:
    """AMC already paid (or reserved) for this beneficiary: counts against flats and ceilings."""

    domain: str
    act: str
    date: dt.date
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Period:
    start: dt.date
    end: dt.date | None = None  # open-ended

    def covers(self, day: dt.date) -> bool:
        return self.start <= day and (self.end is None or day <= self.end)


@dataclass(frozen=True, slots=True)
class LineShare:
    amo: Decimal  # the mandatory scheme's amount before its deductible
    amc: Decimal  # what the complementary pays
    patient: Decimal  # what is left for the patient
    reason: str | None = None  # why the AMC pays nothing, when it is for want of a guarantee
    rule: int | None = None  # index of the rule applied


def share(
    schedule: Schedule,
    lines: Sequence[Line],
    *,
    consumption: Iterable[Consumed] = (),
    coverage: Sequence[Period] | None = None,
) -> list[LineShare]:
    """The AMO, AMC and patient amounts of each line. `coverage=None` means covered on every
    date (the caller already checked); an empty list means covered on none."""
    granted: list[Consumed] = list(consumption)  # grows with each line's AMC, in line order
    results = []
    for line in lines:
        amo = cents(line.br * line.amo_rate / 100)
        room = max(ZERO, line.price - amo)  # AMO + AMC never exceed the price
        amc, reason, index = ZERO, None, None
        if coverage is not None and not any(period.covers(line.date) for period in coverage):
            reason = NO_COVERAGE_ON_DATE
        else:
            index = _first_rule(schedule.rules, line)
            if index is None:
                reason = NO_GUARANTEE
            else:
                amc = _rule_amount(schedule.rules[index], line, amo, room, granted)
                for ceiling in schedule.ceilings:
                    if _ceiling_applies(ceiling, line):
                        used = used_in_period(granted, ceiling.domain, ceiling.acts, ceiling.per, line.date)
                        amc = min(amc, max(ZERO, ceiling.amount - used))
        granted.append(Consumed(line.domain, line.act, line.date, amc))
        patient = line.price - (amo - line.amo_deductible) - amc
        results.append(LineShare(amo=amo, amc=amc, patient=patient, reason=reason, rule=index))
    return results


def no_share(line: Line, reason: str) -> LineShare:
    """A line the complementary pays nothing of, for `reason`."""
    amo = cents(line.br * line.amo_rate / 100)
    return LineShare(amo=amo, amc=ZERO, patient=line.price - (amo - line.amo_deductible), reason=reason)


def _first_rule(rules: Sequence[Rule], line: Line) -> int | None:
    for index, rule in enumerate(rules):
        if (
            rule.domain == line.domain
            and (rule.acts is None or line.act in rule.acts)
            and (rule.amo_rates is None or any(Decimal(rate) == line.amo_rate for rate in rule.amo_rates))
            and (rule.basket is None or rule.basket == line.basket)
        ):
            return index
    return None


def _rule_amount(rule: Rule, line: Line, amo: Decimal, room: Decimal, granted: Sequence[Consumed]) -> Decimal:
    if rule.kind == "br_percent_incl":
        assert rule.percent is not None
        amc = max(ZERO, min(line.price, cents(Decimal(rule.percent) * line.br / 100)) - amo)
    elif rule.kind == "br_percent_extra":
        assert rule.percent is not None
        amc = cents(Decimal(rule.percent) * line.br / 100)
    elif rule.kind == "flat":
        assert rule.amount is not None
        amc = rule.amount
        if rule.per not in (None, "act"):
            amc = max(ZERO, amc - used_in_period(granted, rule.domain, rule.acts, rule.per, line.date))
    else:  # real_cost
        amc = room
    if rule.plus_flat is not None:
        amc += rule.plus_flat
    return min(amc, room)


def _ceiling_applies(ceiling: Ceiling, line: Line) -> bool:
    return ceiling.domain == line.domain and (ceiling.acts is None or line.act in ceiling.acts)


def period_around(per: str | None, day: dt.date) -> tuple[dt.date, dt.date]:
    """The first and last days of the period `per` draws around `day`."""
    if per == "calendar_year":
        return dt.date(day.year, 1, 1), dt.date(day.year, 12, 31)
    # "2y": after the same day two years before, up to `day` included
    return _years_before(day, 2) + dt.timedelta(days=1), day


def used_in_period(
    granted: Iterable[Consumed], domain: str, acts: Sequence[str] | None, per: str | None, day: dt.date
) -> Decimal:
    """AMC already granted in the period that `per` draws around `day`, for a domain (and acts)."""
    start, end = period_around(per, day)
    return sum(
        (
            item.amount
            for item in granted
            if item.domain == domain and (acts is None or item.act in acts) and start <= item.date <= end
        ),
        ZERO,
    )


def _years_before(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February: the same day two years before is the 28th
        return day.replace(year=day.year - years, day=28)

"""What quotes and invoices share: their lines checked, the engagement they quote, the
beneficiary's consumption locked and counted, and the AMC share computed line by line."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from rempart.care.caller import CareCaller
from rempart.care.errors import CareInputError
from rempart.care.models import Consumption, Engagement
from rempart.coverage.compute import NO_COVERAGE_ON_DATE, Consumed, Line, LineShare, cents, no_share, share
from rempart.coverage.schedule import DOMAIN_PATTERN, KNOWN_DOMAINS
from rempart.db import raw
from rempart.registry import service as registry
from rempart.registry.models import CoveragePeriod, ScheduleVersion

MAX_LINES = 100
MAX_AMOUNT = Decimal("100000.00")
BASKETS = ("100_sante",)
_ACT = re.compile(r"[A-Za-z0-9_.\-]{1,40}")
_NUMBER = re.compile(r"[A-Z0-9-]{1,24}")  # engagement and agreement numbers (Crockford base 32)
CENT = Decimal("0.01")


@dataclass(frozen=True)
class LineIn:
    """A line as a caller sends it (amounts as decimal strings of euros)."""

    domain: str
    act: str
    date: dt.date
    price: str
    br: str
    amo_rate: str
    amo_deductible: str = "0.00"
    basket: str | None = None


def _amount(value: str, where: str, *, percent: bool = False) -> Decimal:
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise CareInputError(where, "not a number") from None
    if not amount.is_finite():
        raise CareInputError(where, "not a number")
    if amount < 0:
        raise CareInputError(where, "negative")
    if percent and amount > 100:
        raise CareInputError(where, "a rate is at most 100 (percent)")
    if amount > MAX_AMOUNT:  # before any quantize: a 40-digit number is beyond its precision
        raise CareInputError(where, f"above {MAX_AMOUNT} euros")
    if amount != amount.quantize(CENT):
        raise CareInputError(where, "more than two decimals")
    return amount.quantize(CENT)


def checked_lines(lines: Sequence[LineIn], *, earliest: dt.date, latest: dt.date) -> list[Line]:
    """Lines the computation can take, or CareInputError naming `lines[i].field`."""
    if not lines or len(lines) > MAX_LINES:
        raise CareInputError("lines", f"between 1 and {MAX_LINES} lines")
    checked = []
    for i, given in enumerate(lines):
        where = f"lines[{i}]"
        if not DOMAIN_PATTERN.fullmatch(given.domain) or given.domain not in KNOWN_DOMAINS:
            raise CareInputError(f"{where}.domain", "unknown care domain")
        if not _ACT.fullmatch(given.act):
            raise CareInputError(f"{where}.act", "1 to 40 letters, digits, '_', '.' or '-'")
        if given.basket is not None and given.basket not in BASKETS:
            raise CareInputError(f"{where}.basket", f"one of {', '.join(BASKETS)}, or absent")
        if given.date > latest:
            raise CareInputError(f"{where}.date", f"after {latest.isoformat()}")
        if given.date < earliest:
            raise CareInputError(f"{where}.date", f"before {earliest.isoformat()}")
        price = _amount(given.price, f"{where}.price")
        br = _amount(given.br, f"{where}.br")
        rate = _amount(given.amo_rate, f"{where}.amo_rate", percent=True)
        deductible = _amount(given.amo_deductible, f"{where}.amo_deductible")
        amo = cents(br * rate / 100)  # as the computation rounds it: half up
        if deductible > amo:
            raise CareInputError(f"{where}.amo_deductible", "larger than what the mandatory scheme pays")
        if price < amo:
            raise CareInputError(f"{where}.price", "below what the mandatory scheme pays on this line")
        checked.append(Line(given.domain, given.act, given.date, price, br, rate, deductible, given.basket))
    return checked


def reference_number(number: str, field: str) -> str:
    """An engagement or agreement number as typed, normalized, or refused before any lookup
    (anything else, a NUL character included, is not one)."""
    normalized = number.strip().upper()
    if not _NUMBER.fullmatch(normalized):
        raise CareInputError(field, "not a number Rempart issues (letters, digits and dashes)")
    return normalized


def engagement_of(session: Session, caller: CareCaller, number: str) -> Engagement:
    """The engagement a quote or an invoice quotes: issued to this establishment, or refused
    as unknown (the same message either way: an engagement number proves nothing alone)."""
    found = session.get(Engagement, reference_number(number, "engagement"))
    if found is None or found.establishment_id != caller.establishment_id:
        raise CareInputError("engagement", "unknown, or not issued to this establishment")
    return found


def lock_beneficiary(session: Session, beneficiary_id: uuid.UUID) -> None:
    """Serialize the writes that count against one beneficiary's ceilings: two invoices at once
    must not both spend the same remainder. Held until the transaction ends."""
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended('rempart-consumption:' || :id, 0))"),
        {"id": str(beneficiary_id)},
    )


# The consumption rows that count for %(beneficiary)s on %(today)s: what accepted invoices
# consumed, and what prior agreements reserved until their expiry.
COUNTED = (
    "beneficiary_id = %(beneficiary)s AND (state = 'consumed' OR (state = 'reserved' AND reserved_until >= %(today)s))"
)


def consumption(
    session: Session, beneficiary_id: uuid.UUID, today: dt.date, *, except_source: uuid.UUID | None = None
) -> list[Consumed]:
    """What counts against flats and ceilings: consumed amounts, and reservations not lapsed."""
    params: dict[str, object] = {"beneficiary": beneficiary_id, "today": today}
    if except_source is None:
        rows = raw.fetch_all(session, "SELECT domain, act, care_date, amount FROM consumption WHERE " + COUNTED, params)
    else:
        params["source"] = except_source
        rows = raw.fetch_all(session, "SELECT domain, act, care_date, amount FROM consumption WHERE " + COUNTED
                             + " AND source_id <> %(source)s", params)  # fmt: skip
    return [Consumed(domain, act, day, amount) for domain, act, day, amount in rows]


def shares(
    session: Session, beneficiary_id: uuid.UUID, lines: Sequence[Line], counted: list[Consumed]
) -> list[LineShare]:
    """Each line under the schedule of the contract that covers the beneficiary on its date
    (lines on dates without coverage get nothing, `no_coverage_on_date`); earlier lines count
    against the later ones' flats and ceilings, in line order."""
    results: list[LineShare] = []
    counted = list(counted)
    for line in lines:
        version = session.execute(
            select(ScheduleVersion.id, ScheduleVersion.sha256)
            .join(CoveragePeriod, CoveragePeriod.contract_id == ScheduleVersion.contract_id)
            .where(CoveragePeriod.beneficiary_id == beneficiary_id, CoveragePeriod.start_date <= line.date,
                   (CoveragePeriod.end_date.is_(None)) | (CoveragePeriod.end_date >= line.date),
                   ScheduleVersion.valid_from <= line.date,
                   (ScheduleVersion.valid_to.is_(None)) | (ScheduleVersion.valid_to >= line.date))
            .order_by(CoveragePeriod.start_date.desc(), ScheduleVersion.valid_from.desc()).limit(1)
        ).first()  # fmt: skip
        if version is None:
            result = no_share(line, NO_COVERAGE_ON_DATE)
        else:
            schedule = registry.schedule_of_version(session, version_id=version[0], digest=version[1])
            result = share(schedule, [line], consumption=counted)[0]
        counted.append(Consumed(line.domain, line.act, line.date, result.amc))
        results.append(result)
    return results


def release(session: Session, source_id: uuid.UUID) -> None:
    """What an agreement reserved or an invoice consumed stops counting (cancelled, used)."""
    session.execute(
        update(Consumption)
        .where(Consumption.source_id == source_id, Consumption.state != "released")
        .values(state="released")
    )

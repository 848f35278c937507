"""Invoices: lines in (act, date, price, BR, AMO rate, deductible), quoting the engagement of a
rights check and, where the domain needs one, a prior agreement; out, the invoice accepted with
the AMC and patient amounts of each line, or rejected with a reason code.

* Idempotent: a caller sends an `Idempotency-Key`; the same key with the same invoice returns
  the invoice already made, never a second one; the same key with another invoice is refused.
* States: received → accepted or rejected (decided at once), accepted → paid (by settlement,
  later), received or accepted → cancelled (by the professional, before payment). Each state
  is recorded (`invoice_events`) and audited in the same transaction.
* Ceilings hold under concurrency: the beneficiary's consumption is locked while an invoice is
  decided, so two invoices at once never together exceed a ceiling.

Rejection codes (docs/care.md lists them with what to do):
`engagement_expired`, `domain_not_engaged`, `agreement_required`, `agreement_invalid`,
`duplicate`, `no_coverage_on_date`, `nothing_to_pay`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rempart.audit import events as ev
from rempart.audit.service import Recorder
from rempart.care import agreements
from rempart.care import lines as care_lines
from rempart.care.caller import CareCaller
from rempart.care.errors import CareInputError
from rempart.care.models import Agreement, CareLine, Consumption, Engagement, Invoice, InvoiceEvent
from rempart.coverage.compute import NO_COVERAGE_ON_DATE, ZERO, Line, LineShare
from rempart.coverage.summary import AGREEMENT_DOMAINS
from rempart.db.base import utcnow

INVOICE_BACK = dt.timedelta(days=730)  # care invoiced at most two years later
TOLERANCE_AHEAD = dt.timedelta(days=1)  # a line dated tomorrow: clocks and time zones
MAX_KEY = 100

REJECTIONS = {
    "engagement_expired": "the engagement is past its validity: check the patient's rights again",
    "domain_not_engaged": "a line's domain was not covered by the engagement's rights check",
    "agreement_required": "a line's domain needs a prior agreement: request one with the quote",
    "agreement_invalid": "the agreement is used, cancelled, expired, or for another domain or patient",
    "duplicate": "the same act on the same date for the same patient was already invoiced",
    "no_coverage_on_date": "a line is dated outside the patient's coverage",
    "nothing_to_pay": "no line is covered by the patient's guarantee",
}
LIVE_STATES = ("received", "accepted", "paid")


@dataclass(frozen=True)
class InvoiceAnswer:
    id: uuid.UUID
    state: str
    reason: str | None
    engagement: str
    agreement: str | None
    received_at: dt.datetime
    price_total: Decimal
    amo_total: Decimal
    amc_total: Decimal
    patient_total: Decimal
    lines: tuple[LineShare, ...]
    replayed: bool = False  # the same request was made before: this is that invoice


def request_digest(engagement: str, agreement: str | None, lines: list[care_lines.LineIn]) -> str:
    document = {"engagement": engagement.strip().upper(), "agreement": agreement.strip().upper() if agreement else None,
                "lines": [[line.domain, line.act, line.date.isoformat(), str(line.price), str(line.br),
                           str(line.amo_rate), str(line.amo_deductible), line.basket] for line in lines]}  # fmt: skip
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def submit_invoice(
    session: Session,
    *,
    caller: CareCaller,
    idempotency_key: str,
    engagement: str,
    agreement: str | None,
    lines: list[care_lines.LineIn],
    audit: Recorder,
    today: dt.date | None = None,
) -> InvoiceAnswer:
    """Receive and decide one invoice (or return the one this key already made)."""
    today = today or dt.datetime.now(dt.UTC).date()
    key = idempotency_key.strip()
    if not key or len(key) > MAX_KEY or not key.isascii() or not key.isprintable():
        raise CareInputError("Idempotency-Key", f"a header of 1 to {MAX_KEY} printable characters is required")
    digest = request_digest(engagement, agreement, lines)
    earlier = _by_key(session, caller, key)
    if earlier is not None:
        return _replayed(session, earlier, digest, audit)
    found = care_lines.engagement_of(session, caller, engagement)
    checked = care_lines.checked_lines(lines, earliest=today - INVOICE_BACK, latest=today + TOLERANCE_AHEAD)
    quoted = agreements.agreement_of(session, caller, agreement) if agreement else None
    care_lines.lock_beneficiary(session, found.beneficiary_id)
    earlier = _by_key(session, caller, key)  # a twin request may have made it while we waited for the lock
    if earlier is not None:
        return _replayed(session, earlier, digest, audit)
    if quoted is not None:  # its state as it is now, under the lock (another invoice may have used it)
        session.refresh(quoted, with_for_update=True)
    invoice = Invoice(
        id=uuid.uuid4(), idempotency_key=key, request_sha256=digest, engagement_number=found.number,
        agreement_id=quoted.id if quoted else None, insurer_id=found.insurer_id, beneficiary_id=found.beneficiary_id,
        establishment_id=caller.establishment_id, professional_id=caller.professional_id,
        api_client_id=caller.api_client_id, account_id=caller.account_id, state="received",
        price_total=sum((line.price for line in checked), ZERO), amo_total=ZERO, amc_total=ZERO, patient_total=ZERO,
        received_at=utcnow(),
    )  # fmt: skip
    session.add(invoice)
    try:
        _record(session, invoice, audit)
    except IntegrityError:  # the same key, at the same moment, for another patient's invoice
        session.rollback()
        earlier = _by_key(session, caller, key)
        if earlier is None:
            raise
        return _replayed(session, earlier, digest, audit)
    reason = _precondition(session, found, quoted, checked, caller, today)
    counted = care_lines.consumption(session, found.beneficiary_id, today,
                                     except_source=quoted.id if quoted and reason is None else None)  # fmt: skip
    results = care_lines.shares(session, found.beneficiary_id, checked, counted)
    if reason is None and quoted is not None:
        results = _within_agreement(results, checked, quoted)
    if reason is None and any(r.reason == NO_COVERAGE_ON_DATE for r in results):
        reason = "no_coverage_on_date"
    if reason is None and sum((r.amc for r in results), ZERO) == 0:
        reason = "nothing_to_pay"
    invoice.amo_total = sum((r.amo - line.amo_deductible for r, line in zip(results, checked, strict=True)), ZERO)
    invoice.amc_total = sum((r.amc for r in results), ZERO) if reason is None else ZERO
    invoice.patient_total = invoice.price_total - invoice.amo_total - invoice.amc_total
    _store_lines(session, invoice, checked, results, accepted=reason is None)
    invoice.state, invoice.reason, invoice.decided_at = ("accepted" if reason is None else "rejected"), reason, utcnow()
    if reason is None and quoted is not None:
        quoted.state, quoted.closed_at = "used", utcnow()
        care_lines.release(session, quoted.id)
    _record(session, invoice, audit)
    session.commit()
    return _answer(session, invoice)


def _by_key(session: Session, caller: CareCaller, key: str) -> Invoice | None:
    return session.scalars(
        select(Invoice).where(Invoice.establishment_id == caller.establishment_id, Invoice.idempotency_key == key)
    ).first()


def _replayed(session: Session, earlier: Invoice, digest: str, audit: Recorder) -> InvoiceAnswer:
    """The invoice this key already made: its amounts are shown again, so the showing is audited."""
    if earlier.request_sha256 != digest:
        raise CareInputError("Idempotency-Key", "already used for a different invoice")
    answer = _answer(session, earlier)
    session.rollback()
    audit.disclosed("invoice.replay", purpose="tiers-payant", subjects=[(ev.BENEFICIARY, earlier.beneficiary_id)],
                    fields=("amc_amounts",), detail={"invoice": str(earlier.id)})  # fmt: skip
    return InvoiceAnswer(**{**answer.__dict__, "replayed": True})


def _within_agreement(results: list[LineShare], checked: list[Line], quoted: Agreement) -> list[LineShare]:
    """An agreement binds what the insurer pays in its domain: never more than it agreed
    (the lines may differ from the quote's; what exceeds the agreed total is the patient's)."""
    left = quoted.amc_total
    bound = []
    for line, result in zip(checked, results, strict=True):
        if line.domain == quoted.domain:
            amc = min(result.amc, left)
            left -= amc
            result = LineShare(result.amo, amc, result.patient + (result.amc - amc), result.reason, result.rule)
        bound.append(result)
    return bound


def _precondition(
    session: Session, engagement: Engagement, quoted: Agreement | None, checked: list[Line], caller: CareCaller,
    today: dt.date,
) -> str | None:  # fmt: skip
    """The first reason to reject the invoice before any amount is computed, or None."""
    if engagement.valid_until < today:
        return "engagement_expired"
    if any(line.domain not in engagement.domains for line in checked):
        return "domain_not_engaged"
    needing = {line.domain for line in checked if line.domain in AGREEMENT_DOMAINS}
    if needing and quoted is None:
        return "agreement_required"
    if quoted is not None and (
        quoted.state != "granted" or quoted.expires_on < today or quoted.beneficiary_id != engagement.beneficiary_id
        or needing - {quoted.domain} or quoted.domain not in {line.domain for line in checked}
    ):  # fmt: skip
        return "agreement_invalid"
    for line in checked:
        twin = session.scalar(
            select(CareLine.id).join(Invoice, Invoice.id == CareLine.invoice_id)
            .where(CareLine.professional_id == caller.professional_id,
                   CareLine.beneficiary_id == engagement.beneficiary_id, CareLine.act == line.act,
                   CareLine.care_date == line.date, Invoice.state.in_(LIVE_STATES))
            .limit(1)
        )  # fmt: skip
        if twin is not None:
            return "duplicate"
    return None


def _store_lines(session: Session, invoice: Invoice, checked: list[Line], results: list[LineShare], *,
                 accepted: bool) -> None:  # fmt: skip
    for position, (line, result) in enumerate(zip(checked, results, strict=True), start=1):
        amc = result.amc if accepted else ZERO
        session.add(
            CareLine(
                invoice_id=invoice.id, position=position, professional_id=invoice.professional_id,
                beneficiary_id=invoice.beneficiary_id, domain=line.domain, act=line.act, basket=line.basket,
                care_date=line.date, price=line.price, br=line.br, amo_rate=line.amo_rate,
                amo_deductible=line.amo_deductible, amo=result.amo, amc=amc,
                patient=line.price - (result.amo - line.amo_deductible) - amc, reason=result.reason,
            )
        )  # fmt: skip
        if accepted and amc > 0:
            session.add(
                Consumption(
                    insurer_id=invoice.insurer_id, beneficiary_id=invoice.beneficiary_id, domain=line.domain,
                    act=line.act, care_date=line.date, amount=amc, source="invoice", source_id=invoice.id,
                    state="consumed",
                )
            )  # fmt: skip


def _record(session: Session, invoice: Invoice, audit: Recorder) -> None:
    """A state change: in the invoice's history and in the audit log, in this transaction."""
    session.add(InvoiceEvent(invoice_id=invoice.id, state=invoice.state, reason=invoice.reason))
    session.flush()
    detail = {
        "invoice": str(invoice.id),
        "state": invoice.state,
        **({"reason": invoice.reason} if invoice.reason else {}),
    }
    audit.wrote(session, f"invoice.{invoice.state}", purpose="tiers-payant",
                subject=(ev.BENEFICIARY, invoice.beneficiary_id), fields=("amc_amounts",), detail=detail)  # fmt: skip


def _answer(session: Session, invoice: Invoice) -> InvoiceAnswer:
    rows = session.scalars(select(CareLine).where(CareLine.invoice_id == invoice.id).order_by(CareLine.position))
    shares = tuple(LineShare(row.amo, row.amc, row.patient, row.reason) for row in rows)
    quoted = session.get(Agreement, invoice.agreement_id) if invoice.agreement_id else None
    return InvoiceAnswer(
        invoice.id, invoice.state, invoice.reason, invoice.engagement_number, quoted.number if quoted else None,
        invoice.received_at, invoice.price_total, invoice.amo_total, invoice.amc_total, invoice.patient_total, shares,
    )  # fmt: skip


def cancel_invoice(session: Session, *, caller: CareCaller, invoice_id: uuid.UUID, audit: Recorder) -> InvoiceAnswer:
    """The professional withdraws an invoice before it is paid; what it consumed is released."""
    invoice = session.get(Invoice, invoice_id)
    if invoice is None or invoice.establishment_id != caller.establishment_id:
        raise CareInputError("invoice", "unknown, or not sent by this establishment")
    care_lines.lock_beneficiary(session, invoice.beneficiary_id)
    session.refresh(invoice)
    if invoice.state not in ("received", "accepted"):
        raise CareInputError("invoice", f"cannot be cancelled once {invoice.state}")
    invoice.state, invoice.reason, invoice.cancelled_at = "cancelled", None, utcnow()
    care_lines.release(session, invoice.id)
    _record(session, invoice, audit)
    session.commit()
    return _answer(session, invoice)


@dataclass(frozen=True)
class InvoiceSummary:
    id: uuid.UUID
    received_at: dt.datetime
    state: str
    reason: str | None
    engagement: str
    price_total: Decimal
    amc_total: Decimal


def list_invoices(
    session: Session, *, caller: CareCaller, state: str | None = None, limit: int = 100
) -> list[InvoiceSummary]:
    """This establishment's invoices, newest first: states and amounts, nobody's identity."""
    query = select(Invoice).where(Invoice.establishment_id == caller.establishment_id)
    if state is not None:
        query = query.where(Invoice.state == state)
    rows = session.scalars(query.order_by(Invoice.received_at.desc()).limit(limit))
    return [InvoiceSummary(r.id, r.received_at, r.state, r.reason, r.engagement_number, r.price_total, r.amc_total)
            for r in rows]  # fmt: skip

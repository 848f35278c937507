"""Prior agreements (prise en charge): a quote's lines in, the AMC amount of each line, an
agreement number and its expiry out. The amounts are reserved against the beneficiary's flats
and ceilings until an invoice uses them, the professional cancels, or the agreement expires.

A quote quotes the engagement of a rights check made at the same establishment (which
identified the beneficiary and found the domain covered): nothing identifies anyone again."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.orm import Session

from rempart.audit import events as ev
from rempart.audit.service import Recorder
from rempart.care import lines as care_lines
from rempart.care.caller import CareCaller
from rempart.care.errors import CareInputError
from rempart.care.models import Agreement, CareLine, Consumption
from rempart.coverage.compute import ZERO, Line, LineShare
from rempart.coverage.summary import AGREEMENT_DOMAINS
from rempart.db.base import utcnow

AGREEMENT_DAYS = 180  # a quote agreed today may be invoiced for six months
QUOTE_AHEAD = dt.timedelta(days=180)  # care planned at most six months ahead
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


@dataclass(frozen=True)
class AgreementAnswer:
    number: str
    domain: str
    expires_on: dt.date
    state: str
    lines: tuple[LineShare, ...]

    @property
    def amc_total(self) -> Decimal:
        return sum((line.amc for line in self.lines), ZERO)


def new_agreement_number() -> str:
    body = "".join(secrets.choice(_ALPHABET) for _ in range(16))
    return "A" + "-".join(body[i : i + 4] for i in range(0, 16, 4))


def request_agreement(
    session: Session,
    *,
    caller: CareCaller,
    engagement: str,
    lines: list[care_lines.LineIn],
    audit: Recorder,
    today: dt.date | None = None,
) -> AgreementAnswer:
    """Agree a quote: compute, reserve, record; committed with its audit event."""
    today = today or dt.datetime.now(dt.UTC).date()
    found = care_lines.engagement_of(session, caller, engagement)
    if found.valid_until < today:
        raise CareInputError("engagement", "expired: check the patient's rights again")
    checked = care_lines.checked_lines(lines, earliest=today - dt.timedelta(days=30), latest=today + QUOTE_AHEAD)
    domains = {line.domain for line in checked}
    if len(domains) != 1:
        raise CareInputError("lines", "a quote is for one care domain")
    domain = domains.pop()
    if domain not in AGREEMENT_DOMAINS:
        raise CareInputError("lines", f"no prior agreement is needed for {domain}: send the invoice")
    if domain not in found.domains:
        raise CareInputError("lines", "the engagement does not cover this domain")
    care_lines.lock_beneficiary(session, found.beneficiary_id)
    counted = care_lines.consumption(session, found.beneficiary_id, today)
    results = care_lines.shares(session, found.beneficiary_id, checked, counted)
    agreement = Agreement(
        id=uuid.uuid4(), number=new_agreement_number(), engagement_number=found.number, insurer_id=found.insurer_id,
        beneficiary_id=found.beneficiary_id, establishment_id=caller.establishment_id,
        professional_id=caller.professional_id, domain=domain, expires_on=today + dt.timedelta(days=AGREEMENT_DAYS),
        state="granted", amc_total=sum((r.amc for r in results), ZERO),
    )  # fmt: skip
    session.add(agreement)
    session.flush()
    _store_lines(session, agreement, checked, results)
    audit.wrote(session, "agreement.grant", purpose="tiers-payant", subject=(ev.BENEFICIARY, found.beneficiary_id),
                fields=("amc_amounts",), detail={"agreement": agreement.number})  # fmt: skip
    session.commit()
    return AgreementAnswer(agreement.number, domain, agreement.expires_on, agreement.state, tuple(results))


def _store_lines(session: Session, agreement: Agreement, checked: list[Line], results: list[LineShare]) -> None:
    for position, (line, result) in enumerate(zip(checked, results, strict=True), start=1):
        session.add(
            CareLine(
                agreement_id=agreement.id, position=position, professional_id=agreement.professional_id,
                beneficiary_id=agreement.beneficiary_id, domain=line.domain, act=line.act, basket=line.basket,
                care_date=line.date, price=line.price, br=line.br, amo_rate=line.amo_rate,
                amo_deductible=line.amo_deductible, amo=result.amo, amc=result.amc, patient=result.patient,
                reason=result.reason,
            )
        )  # fmt: skip
        if result.amc > 0:
            session.add(
                Consumption(
                    insurer_id=agreement.insurer_id, beneficiary_id=agreement.beneficiary_id, domain=line.domain,
                    act=line.act, care_date=line.date, amount=result.amc, source="agreement",
                    source_id=agreement.id, state="reserved", reserved_until=agreement.expires_on,
                )
            )  # fmt: skip


def agreement_of(session: Session, caller: CareCaller, number: str) -> Agreement:
    """An agreement granted to this establishment (in any state), or CareInputError."""
    wanted = care_lines.reference_number(number, "agreement")
    found = session.query(Agreement).filter(Agreement.number == wanted).one_or_none()
    if found is None or found.establishment_id != caller.establishment_id:
        raise CareInputError("agreement", "unknown, or not granted to this establishment")
    return found


def cancel_agreement(session: Session, *, caller: CareCaller, number: str, audit: Recorder) -> None:
    """The professional gives up a quote: its reservations are released."""
    found = agreement_of(session, caller, number)
    care_lines.lock_beneficiary(session, found.beneficiary_id)
    session.refresh(found, with_for_update=True)  # an invoice may have used it while we waited
    if found.state != "granted":
        raise CareInputError("agreement", f"already {found.state}")
    found.state, found.closed_at = "cancelled", utcnow()
    care_lines.release(session, found.id)
    audit.wrote(session, "agreement.cancel", purpose="tiers-payant", subject=(ev.BENEFICIARY, found.beneficiary_id),
                detail={"agreement": found.number})  # fmt: skip
    session.commit()

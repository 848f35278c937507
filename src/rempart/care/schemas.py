"""The REST shapes of care requests and answers (JSON; amounts as strings of euros)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from rempart.care import eligibility as rights
from rempart.care import lines as care_lines
from rempart.care.agreements import AgreementAnswer
from rempart.care.invoices import REJECTIONS, InvoiceAnswer
from rempart.coverage.compute import LineShare


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EligibilityIn(_In):
    """What a tiers-payant card and the patient give, nothing more. Either `card_2d` (the
    scanned payload) or `amc_number` with `member_number`; with them `birth_rank`. Or
    `amc_number` with the beneficiary's own `nir`. Always `birth_date`."""

    amc_number: str | None = Field(default=None, max_length=14, examples=["12345678"])
    member_number: str | None = Field(default=None, max_length=30)
    birth_rank: int | None = Field(default=None, ge=1, le=9)
    nir: str | None = Field(default=None, max_length=21)
    card_2d: str | None = Field(default=None, max_length=200, description="RMP1|amc|types|csr|member|from|to")
    birth_date: dt.date
    care_date: dt.date
    domains: list[str] = Field(min_length=1, max_length=10, examples=[["pharmacy"]])

    def to_request(self) -> rights.RightsRequest:
        return rights.RightsRequest(
            amc_number=self.amc_number, birth_date=self.birth_date, care_date=self.care_date,
            domains=tuple(self.domains), member_number=self.member_number, birth_rank=self.birth_rank, nir=self.nir,
            card_2d=self.card_2d,
        )  # fmt: skip


class LevelOut(BaseModel):
    kind: str
    percent: Decimal | None = None
    amount: Decimal | None = None
    per: str | None = None
    acts: list[str] | None = None
    amo_rates: list[int] | None = None
    basket: str | None = None
    plus_flat: Decimal | None = None
    remaining: Decimal | None = None


class CeilingOut(BaseModel):
    amount: Decimal
    per: str
    acts: list[str] | None = None
    period_start: dt.date
    period_end: dt.date
    used: Decimal
    remaining: Decimal


class DomainOut(BaseModel):
    domain: str
    covered: bool
    reason: str | None = None
    prior_agreement_required: bool
    levels: list[LevelOut] = []
    ceilings: list[CeilingOut] = []


class EligibilityOut(BaseModel):
    """`outcome` is covered, not_covered (only for a beneficiary correctly identified) or
    not_found (the same answer whatever did not match)."""

    reference: uuid.UUID
    outcome: str
    care_date: dt.date
    amc_number: str
    guarantee: str | None = None
    valid_from: dt.date | None = None
    valid_to: dt.date | None = None
    engagement: str | None = None
    engagement_valid_until: dt.date | None = None
    domains: list[DomainOut] = []

    @staticmethod
    def of(answer: rights.RightsAnswer) -> EligibilityOut:
        return EligibilityOut(
            reference=answer.reference, outcome=answer.outcome, care_date=answer.care_date,
            amc_number=answer.amc_number, guarantee=answer.guarantee, valid_from=answer.valid_from,
            valid_to=answer.valid_to, engagement=answer.engagement,
            engagement_valid_until=answer.engagement_valid_until,
            domains=[
                DomainOut(
                    domain=d.domain, covered=d.covered, reason=d.reason,
                    prior_agreement_required=d.prior_agreement_required,
                    levels=[
                        LevelOut(kind=lv.kind, percent=lv.percent, amount=lv.amount, per=lv.per,
                                 acts=list(lv.acts) if lv.acts else None,
                                 amo_rates=list(lv.amo_rates) if lv.amo_rates else None, basket=lv.basket,
                                 plus_flat=lv.plus_flat, remaining=lv.remaining)
                        for lv in d.levels
                    ],
                    ceilings=[
                        CeilingOut(amount=c.amount, per=c.per, acts=list(c.acts) if c.acts else None,
                                   period_start=c.period_start, period_end=c.period_end, used=c.used,
                                   remaining=c.remaining)
                        for c in d.ceilings
                    ],
                )
                for d in answer.domains
            ],
        )  # fmt: skip


class LineIn(_In):
    """One act or item: amounts in euros with at most two decimals, rates in percent."""

    domain: str = Field(max_length=40, examples=["pharmacy"])
    act: str = Field(max_length=40, examples=["PHA"])
    date: dt.date
    price: Decimal = Field(allow_inf_nan=False, examples=["10.00"])
    br: Decimal = Field(allow_inf_nan=False, examples=["10.00"])
    amo_rate: Decimal = Field(allow_inf_nan=False, examples=[65])
    amo_deductible: Decimal = Field(default=Decimal("0.00"), allow_inf_nan=False)
    basket: str | None = Field(default=None, max_length=20, examples=["100_sante"])

    def to_line(self) -> care_lines.LineIn:
        return care_lines.LineIn(self.domain, self.act, self.date, str(self.price), str(self.br), str(self.amo_rate),
                                 str(self.amo_deductible), self.basket)  # fmt: skip


class AgreementIn(_In):
    engagement: str = Field(max_length=24, description="from the rights check")
    lines: list[LineIn] = Field(min_length=1, max_length=100)


class InvoiceIn(_In):
    engagement: str = Field(max_length=24, description="from the rights check")
    agreement: str | None = Field(default=None, max_length=24, description="when the domain needs one")
    lines: list[LineIn] = Field(min_length=1, max_length=100)


class LineShareOut(BaseModel):
    position: int
    amo: Decimal
    amc: Decimal
    patient: Decimal
    reason: str | None = None


def _shares(lines: tuple[LineShare, ...]) -> list[LineShareOut]:
    return [LineShareOut(position=i, amo=s.amo, amc=s.amc, patient=s.patient, reason=s.reason)
            for i, s in enumerate(lines, start=1)]  # fmt: skip


class AgreementOut(BaseModel):
    number: str
    domain: str
    state: str
    expires_on: dt.date
    amc_total: Decimal
    lines: list[LineShareOut]

    @staticmethod
    def of(answer: AgreementAnswer) -> AgreementOut:
        return AgreementOut(
            number=answer.number, domain=answer.domain, state=answer.state, expires_on=answer.expires_on,
            amc_total=answer.amc_total, lines=_shares(answer.lines),
        )  # fmt: skip


class InvoiceOut(BaseModel):
    """`state` is accepted or rejected (with `reason`), later paid or cancelled."""

    id: uuid.UUID
    state: str
    reason: str | None = None
    reason_text: str | None = None
    engagement: str
    agreement: str | None = None
    received_at: dt.datetime
    price_total: Decimal
    amo_total: Decimal
    amc_total: Decimal
    patient_total: Decimal
    lines: list[LineShareOut]

    @staticmethod
    def of(answer: InvoiceAnswer) -> InvoiceOut:
        return InvoiceOut(
            id=answer.id, state=answer.state, reason=answer.reason,
            reason_text=REJECTIONS.get(answer.reason) if answer.reason else None, engagement=answer.engagement,
            agreement=answer.agreement, received_at=answer.received_at, price_total=answer.price_total,
            amo_total=answer.amo_total, amc_total=answer.amc_total, patient_total=answer.patient_total,
            lines=_shares(answer.lines),
        )  # fmt: skip


class InvoiceSummaryOut(BaseModel):
    id: uuid.UUID
    received_at: dt.datetime
    state: str
    reason: str | None = None
    engagement: str
    price_total: Decimal
    amc_total: Decimal

"""Care tables. They hold internal ids, dates, care domains and amounts: nothing that names a
person (the beneficiary is the registry's internal id, like the audit log's subject)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import CheckConstraint, Date, DateTime, ForeignKey, Index, Numeric, String, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from rempart.db.base import Base, new_id

OUTCOMES = ("covered", "not_covered", "not_found")


class RightsCheck(Base):
    """One rights check, answered or not: its id is the reference the professional is given."""

    __tablename__ = "rights_checks"
    __table_args__ = (
        CheckConstraint("outcome IN ('covered', 'not_covered', 'not_found')", name="outcome"),
        Index("ix_rights_checks_beneficiary", "beneficiary_id"),
        Index("ix_rights_checks_professional", "professional_id", "at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    establishment_id: Mapped[uuid.UUID]
    professional_id: Mapped[uuid.UUID]
    api_client_id: Mapped[uuid.UUID | None]
    account_id: Mapped[uuid.UUID | None]
    insurer_id: Mapped[uuid.UUID | None]
    beneficiary_id: Mapped[uuid.UUID | None]
    care_date: Mapped[dt.date] = mapped_column(Date)
    domains: Mapped[list[str]] = mapped_column(ARRAY(String(40)))
    outcome: Mapped[str] = mapped_column(String(12))


class Engagement(Base):
    """The insurer's promise to pay for care in some domains on a date, for one beneficiary at
    one establishment; the invoice quotes its number."""

    __tablename__ = "engagements"
    __table_args__ = (Index("ix_engagements_beneficiary", "beneficiary_id"),)

    number: Mapped[str] = mapped_column(String(24), primary_key=True)
    check_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rights_checks.id"))
    insurer_id: Mapped[uuid.UUID]
    beneficiary_id: Mapped[uuid.UUID]
    establishment_id: Mapped[uuid.UUID]
    care_date: Mapped[dt.date] = mapped_column(Date)
    domains: Mapped[list[str]] = mapped_column(ARRAY(String(40)))
    valid_until: Mapped[dt.date] = mapped_column(Date)  # the last day an invoice may quote it
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Consumption(Base):
    """AMC amounts counted against a beneficiary's flats and ceilings: reserved by a prior
    agreement, consumed by an accepted invoice, released when cancelled or expired."""

    __tablename__ = "consumption"
    __table_args__ = (
        CheckConstraint("amount >= 0", name="amount"),
        CheckConstraint("source IN ('invoice', 'agreement')", name="source"),
        CheckConstraint("state IN ('reserved', 'consumed', 'released')", name="state"),
        Index("ix_consumption_beneficiary", "beneficiary_id", "domain"),
        Index("ix_consumption_source", "source_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    insurer_id: Mapped[uuid.UUID]
    beneficiary_id: Mapped[uuid.UUID]
    domain: Mapped[str] = mapped_column(String(40))
    act: Mapped[str] = mapped_column(String(40))
    care_date: Mapped[dt.date] = mapped_column(Date)
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    source: Mapped[str] = mapped_column(String(10))
    source_id: Mapped[uuid.UUID]
    state: Mapped[str] = mapped_column(String(10))
    reserved_until: Mapped[dt.date | None] = mapped_column(Date)  # a reservation lapses after this day
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


AGREEMENT_STATES = ("granted", "used", "cancelled")
INVOICE_STATES = ("received", "accepted", "rejected", "paid", "cancelled")


class Agreement(Base):
    """A prior agreement (prise en charge) on a quote: the AMC amounts the insurer will pay,
    reserved against the beneficiary's flats and ceilings until used, cancelled or expired."""

    __tablename__ = "agreements"
    __table_args__ = (
        CheckConstraint("state IN ('granted', 'used', 'cancelled')", name="state"),
        Index("ix_agreements_beneficiary", "beneficiary_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    number: Mapped[str] = mapped_column(String(24), unique=True)
    engagement_number: Mapped[str] = mapped_column(ForeignKey("engagements.number"))
    insurer_id: Mapped[uuid.UUID]
    beneficiary_id: Mapped[uuid.UUID]
    establishment_id: Mapped[uuid.UUID]
    professional_id: Mapped[uuid.UUID]
    domain: Mapped[str] = mapped_column(String(40))
    expires_on: Mapped[dt.date] = mapped_column(Date)
    state: Mapped[str] = mapped_column(String(10))
    amc_total: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Invoice(Base):
    """An invoice for care: received, then accepted or rejected (with a reason code), paid by
    the settlement capability, or cancelled by the professional before payment."""

    __tablename__ = "invoices"
    __table_args__ = (
        CheckConstraint("state IN ('received', 'accepted', 'rejected', 'paid', 'cancelled')", name="state"),
        UniqueConstraint("establishment_id", "idempotency_key", name="uq_invoices_idempotency"),
        Index("ix_invoices_establishment", "establishment_id", "received_at"),
        Index("ix_invoices_beneficiary", "beneficiary_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    idempotency_key: Mapped[str] = mapped_column(String(100))
    request_sha256: Mapped[str] = mapped_column(String(64))
    engagement_number: Mapped[str] = mapped_column(ForeignKey("engagements.number"))
    agreement_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("agreements.id"))
    insurer_id: Mapped[uuid.UUID]
    beneficiary_id: Mapped[uuid.UUID]
    establishment_id: Mapped[uuid.UUID]
    professional_id: Mapped[uuid.UUID]
    api_client_id: Mapped[uuid.UUID | None]
    account_id: Mapped[uuid.UUID | None]
    state: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str | None] = mapped_column(String(40))
    price_total: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    amo_total: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    amc_total: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    patient_total: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class CareLine(Base):
    """A line of a quote (agreement) or of an invoice, with what the computation gave it."""

    __tablename__ = "care_lines"
    __table_args__ = (
        CheckConstraint("(agreement_id IS NULL) <> (invoice_id IS NULL)", name="owner"),
        Index("ix_care_lines_duplicates", "professional_id", "beneficiary_id", "act", "care_date"),
        Index("ix_care_lines_invoice", "invoice_id"),
        Index("ix_care_lines_agreement", "agreement_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    agreement_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("agreements.id"))
    invoice_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("invoices.id"))
    position: Mapped[int]
    professional_id: Mapped[uuid.UUID]
    beneficiary_id: Mapped[uuid.UUID]
    domain: Mapped[str] = mapped_column(String(40))
    act: Mapped[str] = mapped_column(String(40))
    basket: Mapped[str | None] = mapped_column(String(20))
    care_date: Mapped[dt.date] = mapped_column(Date)
    price: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    br: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    amo_rate: Mapped[Decimal] = mapped_column(Numeric(5, 2))
    amo_deductible: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    amo: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    amc: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    patient: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    reason: Mapped[str | None] = mapped_column(String(40))


class InvoiceEvent(Base):
    """Each state an invoice went through, when and why (the audit log holds the same, signed)."""

    __tablename__ = "invoice_events"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    invoice_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("invoices.id"), index=True)
    state: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str | None] = mapped_column(String(40))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

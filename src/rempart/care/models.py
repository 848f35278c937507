"""Care tables. They hold internal ids, dates, care domains and amounts: nothing that names a
person (the beneficiary is the registry's internal id, like the audit log's subject)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import CheckConstraint, Date, DateTime, ForeignKey, Index, Numeric, String, func
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
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

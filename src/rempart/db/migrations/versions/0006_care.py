"""care: rights checks, engagements, agreements, invoices, consumption

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23

Tenant tables like the registry's (0002): insurer staff see their own insurer's rows only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


OWN = "insurer_id = rempart_session_insurer()"
OWN_INVOICES = f"SELECT id FROM invoices WHERE {OWN}"
TENANT_TABLES = {
    "rights_checks": OWN,
    "engagements": OWN,
    "consumption": OWN,
    "agreements": OWN,
    "invoices": OWN,
    "care_lines": f"invoice_id IN ({OWN_INVOICES}) OR agreement_id IN (SELECT id FROM agreements WHERE {OWN})",
    "invoice_events": f"invoice_id IN ({OWN_INVOICES})",
}


def upgrade() -> None:
    op.create_table(
        "consumption",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("insurer_id", sa.Uuid(), nullable=False),
        sa.Column("beneficiary_id", sa.Uuid(), nullable=False),
        sa.Column("domain", sa.String(length=40), nullable=False),
        sa.Column("act", sa.String(length=40), nullable=False),
        sa.Column("care_date", sa.Date(), nullable=False),
        sa.Column("amount", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("source_id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("reserved_until", sa.Date(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("source IN ('invoice', 'agreement')", name=op.f("ck_consumption_source")),
        sa.CheckConstraint("state IN ('reserved', 'consumed', 'released')", name=op.f("ck_consumption_state")),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_consumption_amount")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consumption")),
    )
    op.create_index("ix_consumption_beneficiary", "consumption", ["beneficiary_id", "domain"], unique=False)
    op.create_index("ix_consumption_source", "consumption", ["source_id"], unique=False)
    op.create_table(
        "rights_checks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("establishment_id", sa.Uuid(), nullable=False),
        sa.Column("professional_id", sa.Uuid(), nullable=False),
        sa.Column("api_client_id", sa.Uuid(), nullable=True),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("insurer_id", sa.Uuid(), nullable=True),
        sa.Column("beneficiary_id", sa.Uuid(), nullable=True),
        sa.Column("care_date", sa.Date(), nullable=False),
        sa.Column("domains", postgresql.ARRAY(sa.String(length=40)), nullable=False),
        sa.Column("outcome", sa.String(length=12), nullable=False),
        sa.CheckConstraint("outcome IN ('covered', 'not_covered', 'not_found')", name=op.f("ck_rights_checks_outcome")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rights_checks")),
    )
    op.create_index("ix_rights_checks_beneficiary", "rights_checks", ["beneficiary_id"], unique=False)
    op.create_index("ix_rights_checks_professional", "rights_checks", ["professional_id", "at"], unique=False)
    op.create_table(
        "engagements",
        sa.Column("number", sa.String(length=24), nullable=False),
        sa.Column("check_id", sa.Uuid(), nullable=False),
        sa.Column("insurer_id", sa.Uuid(), nullable=False),
        sa.Column("beneficiary_id", sa.Uuid(), nullable=False),
        sa.Column("establishment_id", sa.Uuid(), nullable=False),
        sa.Column("care_date", sa.Date(), nullable=False),
        sa.Column("domains", postgresql.ARRAY(sa.String(length=40)), nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["check_id"], ["rights_checks.id"], name=op.f("fk_engagements_check_id_rights_checks")),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_engagements")),
    )
    op.create_index("ix_engagements_beneficiary", "engagements", ["beneficiary_id"], unique=False)
    op.create_table(
        "agreements",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.String(length=24), nullable=False),
        sa.Column("engagement_number", sa.String(length=24), nullable=False),
        sa.Column("insurer_id", sa.Uuid(), nullable=False),
        sa.Column("beneficiary_id", sa.Uuid(), nullable=False),
        sa.Column("establishment_id", sa.Uuid(), nullable=False),
        sa.Column("professional_id", sa.Uuid(), nullable=False),
        sa.Column("domain", sa.String(length=40), nullable=False),
        sa.Column("expires_on", sa.Date(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("amc_total", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('granted', 'used', 'cancelled')", name=op.f("ck_agreements_state")),
        sa.ForeignKeyConstraint(
            ["engagement_number"], ["engagements.number"], name=op.f("fk_agreements_engagement_number_engagements")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agreements")),
        sa.UniqueConstraint("number", name=op.f("uq_agreements_number")),
    )
    op.create_index("ix_agreements_beneficiary", "agreements", ["beneficiary_id"], unique=False)
    op.create_table(
        "invoices",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=100), nullable=False),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column("engagement_number", sa.String(length=24), nullable=False),
        sa.Column("agreement_id", sa.Uuid(), nullable=True),
        sa.Column("insurer_id", sa.Uuid(), nullable=False),
        sa.Column("beneficiary_id", sa.Uuid(), nullable=False),
        sa.Column("establishment_id", sa.Uuid(), nullable=False),
        sa.Column("professional_id", sa.Uuid(), nullable=False),
        sa.Column("api_client_id", sa.Uuid(), nullable=True),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=True),
        sa.Column("price_total", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("amo_total", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("amc_total", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("patient_total", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('received', 'accepted', 'rejected', 'paid', 'cancelled')", name=op.f("ck_invoices_state")
        ),
        sa.ForeignKeyConstraint(["agreement_id"], ["agreements.id"], name=op.f("fk_invoices_agreement_id_agreements")),
        sa.ForeignKeyConstraint(
            ["engagement_number"], ["engagements.number"], name=op.f("fk_invoices_engagement_number_engagements")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint("establishment_id", "idempotency_key", name="uq_invoices_idempotency"),
    )
    op.create_index("ix_invoices_beneficiary", "invoices", ["beneficiary_id"], unique=False)
    op.create_index("ix_invoices_establishment", "invoices", ["establishment_id", "received_at"], unique=False)
    op.create_table(
        "care_lines",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("agreement_id", sa.Uuid(), nullable=True),
        sa.Column("invoice_id", sa.Uuid(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("professional_id", sa.Uuid(), nullable=False),
        sa.Column("beneficiary_id", sa.Uuid(), nullable=False),
        sa.Column("domain", sa.String(length=40), nullable=False),
        sa.Column("act", sa.String(length=40), nullable=False),
        sa.Column("basket", sa.String(length=20), nullable=True),
        sa.Column("care_date", sa.Date(), nullable=False),
        sa.Column("price", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("br", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("amo_rate", sa.Numeric(precision=5, scale=2), nullable=False),
        sa.Column("amo_deductible", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("amo", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("amc", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("patient", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=True),
        sa.CheckConstraint("(agreement_id IS NULL) <> (invoice_id IS NULL)", name=op.f("ck_care_lines_owner")),
        sa.ForeignKeyConstraint(
            ["agreement_id"], ["agreements.id"], name=op.f("fk_care_lines_agreement_id_agreements")
        ),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], name=op.f("fk_care_lines_invoice_id_invoices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_lines")),
    )
    op.create_index("ix_care_lines_agreement", "care_lines", ["agreement_id"], unique=False)
    op.create_index(
        "ix_care_lines_duplicates",
        "care_lines",
        ["professional_id", "beneficiary_id", "act", "care_date"],
        unique=False,
    )
    op.create_index("ix_care_lines_invoice", "care_lines", ["invoice_id"], unique=False)
    op.create_table(
        "invoice_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("invoice_id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], name=op.f("fk_invoice_events_invoice_id_invoices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_events")),
    )
    op.create_index(op.f("ix_invoice_events_invoice_id"), "invoice_events", ["invoice_id"], unique=False)

    for table, condition in TENANT_TABLES.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY tenant_own ON {table} FOR SELECT TO rempart_tenant USING ({condition})")
        op.execute(f"CREATE POLICY platform_all ON {table} TO rempart_platform USING (true) WITH CHECK (true)")
        op.execute(f"GRANT SELECT ON {table} TO rempart_tenant")


def downgrade() -> None:
    op.drop_index(op.f("ix_invoice_events_invoice_id"), table_name="invoice_events")
    op.drop_table("invoice_events")
    op.drop_index("ix_care_lines_invoice", table_name="care_lines")
    op.drop_index("ix_care_lines_duplicates", table_name="care_lines")
    op.drop_index("ix_care_lines_agreement", table_name="care_lines")
    op.drop_table("care_lines")
    op.drop_index("ix_invoices_establishment", table_name="invoices")
    op.drop_index("ix_invoices_beneficiary", table_name="invoices")
    op.drop_table("invoices")
    op.drop_index("ix_agreements_beneficiary", table_name="agreements")
    op.drop_table("agreements")
    op.drop_index("ix_engagements_beneficiary", table_name="engagements")
    op.drop_table("engagements")
    op.drop_index("ix_rights_checks_professional", table_name="rights_checks")
    op.drop_index("ix_rights_checks_beneficiary", table_name="rights_checks")
    op.drop_table("rights_checks")
    op.drop_index("ix_consumption_source", table_name="consumption")
    op.drop_index("ix_consumption_beneficiary", table_name="consumption")
    op.drop_table("consumption")

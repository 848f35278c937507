"""care: rights checks, engagements, consumption

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


TENANT_TABLES = ("rights_checks", "engagements", "consumption")


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
    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_own ON {table} FOR SELECT TO rempart_tenant"
            " USING (insurer_id = rempart_session_insurer())"
        )
        op.execute(f"CREATE POLICY platform_all ON {table} TO rempart_platform USING (true) WITH CHECK (true)")
        op.execute(f"GRANT SELECT ON {table} TO rempart_tenant")


def downgrade() -> None:
    op.drop_index("ix_engagements_beneficiary", table_name="engagements")
    op.drop_table("engagements")
    op.drop_index("ix_rights_checks_professional", table_name="rights_checks")
    op.drop_index("ix_rights_checks_beneficiary", table_name="rights_checks")
    op.drop_table("rights_checks")
    op.drop_index("ix_consumption_source", table_name="consumption")
    op.drop_index("ix_consumption_beneficiary", table_name="consumption")
    op.drop_table("consumption")

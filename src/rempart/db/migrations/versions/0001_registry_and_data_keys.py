"""registry and data keys

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


NO_DELETE = """
CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are never deleted: shred or retire instead', TG_TABLE_NAME;
END $$;
"""


def upgrade() -> None:
    # Canary flags live apart, in a schema no ordinary role may read.
    op.execute("CREATE SCHEMA IF NOT EXISTS guard")
    op.execute("REVOKE ALL ON SCHEMA guard FROM PUBLIC")
    op.create_table(
        "establishments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("finess", sa.String(length=9), nullable=True),
        sa.Column("siret", sa.String(length=14), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_establishments")),
        sa.UniqueConstraint("finess", name=op.f("uq_establishments_finess")),
        sa.UniqueConstraint("siret", name=op.f("uq_establishments_siret")),
    )
    op.create_table(
        "insurers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("amc_number", sa.String(length=10), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("siren", sa.String(length=9), nullable=False),
        sa.Column("expected_population", sa.Integer(), nullable=False),
        sa.Column("index_bits", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("shredded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("status IN ('active', 'shredded')", name=op.f("ck_insurers_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_insurers")),
        sa.UniqueConstraint("amc_number", name=op.f("uq_insurers_amc_number")),
    )
    op.create_table(
        "professionals",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("dek_id", sa.Integer(), nullable=False),
        sa.Column("id_kind", sa.String(length=5), nullable=False),
        sa.Column("identifier_ct", sa.LargeBinary(), nullable=False),
        sa.Column("identifier_bidx", sa.Integer(), nullable=False),
        sa.Column("family_name_ct", sa.LargeBinary(), nullable=False),
        sa.Column("first_name_ct", sa.LargeBinary(), nullable=False),
        sa.Column("iban_ct", sa.LargeBinary(), nullable=True),
        sa.Column("email_ct", sa.LargeBinary(), nullable=True),
        sa.Column("phone_ct", sa.LargeBinary(), nullable=True),
        sa.Column("profession", sa.String(length=60), nullable=False),
        sa.Column("specialty", sa.String(length=80), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("id_kind IN ('rpps', 'adeli')", name=op.f("ck_professionals_id_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_professionals")),
    )
    op.create_index("ix_professionals_lookup", "professionals", ["identifier_bidx"], unique=False)
    op.create_table(
        "contracts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("insurer_id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("responsable", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["insurer_id"], ["insurers.id"], name=op.f("fk_contracts_insurer_id_insurers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contracts")),
        sa.UniqueConstraint("insurer_id", "code", name=op.f("uq_contracts_insurer_id")),
    )
    op.create_table(
        "data_keys",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("insurer_id", sa.Uuid(), nullable=True),
        sa.Column("kek_name", sa.String(length=80), nullable=False),
        sa.Column("purpose", sa.String(length=10), nullable=False),
        sa.Column("kek_version", sa.Integer(), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("purpose IN ('field', 'index')", name=op.f("ck_data_keys_purpose")),
        sa.CheckConstraint("state IN ('active', 'retiring', 'retired')", name=op.f("ck_data_keys_state")),
        sa.ForeignKeyConstraint(["insurer_id"], ["insurers.id"], name=op.f("fk_data_keys_insurer_id_insurers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_keys")),
    )
    op.create_index(op.f("ix_data_keys_insurer_id"), "data_keys", ["insurer_id"], unique=False)
    op.create_index(
        "uq_data_keys_one_active",
        "data_keys",
        ["kek_name", "purpose"],
        unique=True,
        postgresql_where="state = 'active'",
    )
    op.create_table(
        "imports",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("insurer_id", sa.Uuid(), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("actor", sa.String(length=120), nullable=False),
        sa.Column("file_name", sa.Text(), nullable=False),
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("rows_total", sa.Integer(), nullable=False),
        sa.Column("rows_inserted", sa.Integer(), nullable=False),
        sa.Column("rows_updated", sa.Integer(), nullable=False),
        sa.Column("rows_unchanged", sa.Integer(), nullable=False),
        sa.Column("rows_rejected", sa.Integer(), nullable=False),
        sa.Column("coverage_closed", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('applied', 'partial', 'rejected')", name=op.f("ck_imports_status")),
        sa.ForeignKeyConstraint(["insurer_id"], ["insurers.id"], name=op.f("fk_imports_insurer_id_insurers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imports")),
    )
    op.create_index("ix_imports_insurer_sha", "imports", ["insurer_id", "file_sha256"], unique=False)
    op.create_table(
        "members",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("insurer_id", sa.Uuid(), nullable=False),
        sa.Column("dek_id", sa.Integer(), nullable=False),
        sa.Column("member_number_ct", sa.LargeBinary(), nullable=False),
        sa.Column("member_nir_ct", sa.LargeBinary(), nullable=False),
        sa.Column("number_bidx", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["insurer_id"], ["insurers.id"], name=op.f("fk_members_insurer_id_insurers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_members")),
    )
    op.create_index("ix_members_lookup", "members", ["insurer_id", "number_bidx"], unique=False)
    op.create_table(
        "practices",
        sa.Column("professional_id", sa.Uuid(), nullable=False),
        sa.Column("establishment_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["establishment_id"], ["establishments.id"], name=op.f("fk_practices_establishment_id_establishments")
        ),
        sa.ForeignKeyConstraint(
            ["professional_id"], ["professionals.id"], name=op.f("fk_practices_professional_id_professionals")
        ),
        sa.PrimaryKeyConstraint("professional_id", "establishment_id", name=op.f("pk_practices")),
    )
    op.create_table(
        "beneficiaries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("insurer_id", sa.Uuid(), nullable=False),
        sa.Column("member_id", sa.Uuid(), nullable=False),
        sa.Column("dek_id", sa.Integer(), nullable=False),
        sa.Column("nir_ct", sa.LargeBinary(), nullable=True),
        sa.Column("family_name_ct", sa.LargeBinary(), nullable=False),
        sa.Column("first_name_ct", sa.LargeBinary(), nullable=False),
        sa.Column("birth_name_ct", sa.LargeBinary(), nullable=True),
        sa.Column("birth_date_ct", sa.LargeBinary(), nullable=False),
        sa.Column("birth_rank", sa.SmallInteger(), nullable=False),
        sa.Column("relationship", sa.String(length=10), nullable=False),
        sa.Column("nir_bidx", sa.Integer(), nullable=True),
        sa.Column("card_bidx", sa.Integer(), nullable=True),
        sa.Column("member_nir_bidx", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "relationship IN ('member', 'spouse', 'child', 'other')", name=op.f("ck_beneficiaries_relationship")
        ),
        sa.CheckConstraint("birth_rank BETWEEN 1 AND 9", name=op.f("ck_beneficiaries_birth_rank")),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_beneficiaries_member_id_members")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_beneficiaries")),
    )
    op.create_index("ix_beneficiaries_card", "beneficiaries", ["insurer_id", "card_bidx"], unique=False)
    op.create_index("ix_beneficiaries_member", "beneficiaries", ["member_id"], unique=False)
    op.create_index("ix_beneficiaries_member_nir", "beneficiaries", ["insurer_id", "member_nir_bidx"], unique=False)
    op.create_index("ix_beneficiaries_nir", "beneficiaries", ["insurer_id", "nir_bidx"], unique=False)
    op.create_table(
        "schedule_versions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("contract_id", sa.Uuid(), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date(), nullable=True),
        sa.Column("format", sa.SmallInteger(), nullable=False),
        sa.Column("schedule", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("valid_to IS NULL OR valid_to >= valid_from", name=op.f("ck_schedule_versions_dates")),
        sa.ForeignKeyConstraint(
            ["contract_id"], ["contracts.id"], name=op.f("fk_schedule_versions_contract_id_contracts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_versions")),
        sa.UniqueConstraint("contract_id", "valid_from", name=op.f("uq_schedule_versions_contract_id")),
    )
    op.create_table(
        "coverage_periods",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("insurer_id", sa.Uuid(), nullable=False),
        sa.Column("beneficiary_id", sa.Uuid(), nullable=False),
        sa.Column("contract_id", sa.Uuid(), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("closed_by_import_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("end_date IS NULL OR end_date >= start_date", name=op.f("ck_coverage_periods_dates")),
        sa.ForeignKeyConstraint(
            ["beneficiary_id"], ["beneficiaries.id"], name=op.f("fk_coverage_periods_beneficiary_id_beneficiaries")
        ),
        sa.ForeignKeyConstraint(
            ["contract_id"], ["contracts.id"], name=op.f("fk_coverage_periods_contract_id_contracts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coverage_periods")),
        sa.UniqueConstraint("beneficiary_id", "start_date", name=op.f("uq_coverage_periods_beneficiary_id")),
    )
    op.create_table(
        "canary_beneficiaries",
        sa.Column("beneficiary_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["beneficiary_id"], ["beneficiaries.id"], name=op.f("fk_canary_beneficiaries_beneficiary_id_beneficiaries")
        ),
        sa.PrimaryKeyConstraint("beneficiary_id", name=op.f("pk_canary_beneficiaries")),
        schema="guard",
    )
    # Insurers and data keys are never deleted (see registry.models on foreign keys).
    op.execute(NO_DELETE)
    for table in ("insurers", "data_keys"):
        op.execute(
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION refuse_delete()"
        )


def downgrade() -> None:
    for table in ("insurers", "data_keys"):
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete ON {table}")
    op.execute("DROP FUNCTION IF EXISTS refuse_delete()")
    op.drop_table("canary_beneficiaries", schema="guard")
    op.drop_table("coverage_periods")
    op.drop_table("schedule_versions")
    op.drop_index("ix_beneficiaries_nir", table_name="beneficiaries")
    op.drop_index("ix_beneficiaries_member_nir", table_name="beneficiaries")
    op.drop_index("ix_beneficiaries_member", table_name="beneficiaries")
    op.drop_index("ix_beneficiaries_card", table_name="beneficiaries")
    op.drop_table("beneficiaries")
    op.drop_table("practices")
    op.drop_index("ix_members_lookup", table_name="members")
    op.drop_table("members")
    op.drop_index("ix_imports_insurer_sha", table_name="imports")
    op.drop_table("imports")
    op.drop_index("uq_data_keys_one_active", table_name="data_keys", postgresql_where="state = 'active'")
    op.drop_index(op.f("ix_data_keys_insurer_id"), table_name="data_keys")
    op.drop_table("data_keys")
    op.drop_table("contracts")
    op.drop_index("ix_professionals_lookup", table_name="professionals")
    op.drop_table("professionals")
    op.drop_table("insurers")
    op.drop_table("establishments")
    op.execute("DROP SCHEMA IF EXISTS guard")

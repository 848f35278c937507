"""accounts passkeys sessions

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oidc_flows",
        sa.Column("state_hash", sa.LargeBinary(), nullable=False),
        sa.Column("nonce", sa.String(length=100), nullable=False),
        sa.Column("code_verifier", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("state_hash", name=op.f("pk_oidc_flows")),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("dek_id", sa.Integer(), nullable=False),
        sa.Column("recipient_ct", sa.LargeBinary(), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_table(
        "rate_counters",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", "window_start", name=op.f("pk_rate_counters")),
    )
    op.create_table(
        "seen_jtis",
        sa.Column("jti", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_seen_jtis")),
    )
    op.create_index(op.f("ix_seen_jtis_expires_at"), "seen_jtis", ["expires_at"], unique=False)
    op.create_table(
        "accounts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=30), nullable=False),
        sa.Column("professional_id", sa.Uuid(), nullable=True),
        sa.Column("establishment_id", sa.Uuid(), nullable=True),
        sa.Column("insurer_id", sa.Uuid(), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reduced_limits_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("role <> 'insurer_staff' OR insurer_id IS NOT NULL", name=op.f("ck_accounts_staff_tenant")),
        sa.CheckConstraint(
            "role <> 'professional' OR professional_id IS NOT NULL", name=op.f("ck_accounts_professional")
        ),
        sa.CheckConstraint(
            "role IN ('professional', 'establishment_admin', 'insurer_staff', 'platform_operator', 'security_officer', 'dpo')",
            name=op.f("ck_accounts_role"),
        ),
        sa.ForeignKeyConstraint(
            ["establishment_id"], ["establishments.id"], name=op.f("fk_accounts_establishment_id_establishments")
        ),
        sa.ForeignKeyConstraint(["insurer_id"], ["insurers.id"], name=op.f("fk_accounts_insurer_id_insurers")),
        sa.ForeignKeyConstraint(
            ["professional_id"], ["professionals.id"], name=op.f("fk_accounts_professional_id_professionals")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
    )
    op.create_table(
        "iban_changes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("professional_id", sa.Uuid(), nullable=False),
        sa.Column("dek_id", sa.Integer(), nullable=False),
        sa.Column("new_iban_ct", sa.LargeBinary(), nullable=False),
        sa.Column("requested_by", sa.Uuid(), nullable=True),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["professional_id"], ["professionals.id"], name=op.f("fk_iban_changes_professional_id_professionals")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_iban_changes")),
    )
    op.create_index("ix_iban_changes_professional", "iban_changes", ["professional_id", "effective_at"], unique=False)
    op.create_table(
        "api_clients",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("establishment_id", sa.Uuid(), nullable=False),
        sa.Column("public_jwk", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("scopes", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["created_by"], ["accounts.id"], name=op.f("fk_api_clients_created_by_accounts")),
        sa.ForeignKeyConstraint(
            ["establishment_id"], ["establishments.id"], name=op.f("fk_api_clients_establishment_id_establishments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_clients")),
    )
    op.create_table(
        "invitations",
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("role", sa.String(length=30), nullable=False),
        sa.Column("professional_id", sa.Uuid(), nullable=True),
        sa.Column("establishment_id", sa.Uuid(), nullable=True),
        sa.Column("insurer_id", sa.Uuid(), nullable=True),
        sa.Column("issued_by", sa.Uuid(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_invitations_account_id_accounts")),
        sa.ForeignKeyConstraint(
            ["establishment_id"], ["establishments.id"], name=op.f("fk_invitations_establishment_id_establishments")
        ),
        sa.ForeignKeyConstraint(["insurer_id"], ["insurers.id"], name=op.f("fk_invitations_insurer_id_insurers")),
        sa.ForeignKeyConstraint(["issued_by"], ["accounts.id"], name=op.f("fk_invitations_issued_by_accounts")),
        sa.ForeignKeyConstraint(
            ["professional_id"], ["professionals.id"], name=op.f("fk_invitations_professional_id_professionals")
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_invitations")),
    )
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("text", sa.String(length=500), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_notices_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notices")),
    )
    op.create_index("ix_notices_account", "notices", ["account_id"], unique=False)
    op.create_table(
        "passkeys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("credential_id", sa.LargeBinary(), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("sign_count", sa.BigInteger(), nullable=False),
        sa.Column("backup_eligible", sa.Boolean(), nullable=False),
        sa.Column("backup_state", sa.Boolean(), nullable=False),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_passkeys_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_passkeys")),
        sa.UniqueConstraint("credential_id", name=op.f("uq_passkeys_credential_id")),
    )
    op.create_index("ix_passkeys_account", "passkeys", ["account_id"], unique=False)
    op.create_table(
        "recovery_codes",
        sa.Column("selector", sa.String(length=12), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("secret_hash", sa.String(length=200), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_recovery_codes_account_id_accounts")),
        sa.PrimaryKeyConstraint("selector", name=op.f("pk_recovery_codes")),
    )
    op.create_index(op.f("ix_recovery_codes_account_id"), "recovery_codes", ["account_id"], unique=False)
    op.create_table(
        "security_events",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_security_events_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_events")),
    )
    op.create_index("ix_security_events_account", "security_events", ["account_id", "at"], unique=False)
    op.create_table(
        "webauthn_ceremonies",
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("challenge", sa.LargeBinary(), nullable=False),
        sa.Column("invitation_hash", sa.LargeBinary(), nullable=True),
        sa.Column("user_handle", sa.LargeBinary(), nullable=True),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_webauthn_ceremonies_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_webauthn_ceremonies")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("client_id", sa.Uuid(), nullable=False),
        sa.Column("jkt", sa.String(length=64), nullable=False),
        sa.Column("scopes", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["client_id"], ["api_clients.id"], name=op.f("fk_api_tokens_client_id_api_clients")),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_api_tokens")),
    )
    op.create_table(
        "break_glass_grants",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("beneficiary_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_break_glass_grants_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["beneficiary_id"], ["beneficiaries.id"], name=op.f("fk_break_glass_grants_beneficiary_id_beneficiaries")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_break_glass_grants")),
    )
    op.create_index("ix_break_glass_account", "break_glass_grants", ["account_id", "beneficiary_id"], unique=False)
    op.create_table(
        "login_sessions",
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("passkey_id", sa.Uuid(), nullable=True),
        sa.Column("method", sa.String(length=20), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("step_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("establishment_id", sa.Uuid(), nullable=True),
        sa.Column("establishment_choices", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_login_sessions_account_id_accounts")),
        sa.ForeignKeyConstraint(
            ["establishment_id"], ["establishments.id"], name=op.f("fk_login_sessions_establishment_id_establishments")
        ),
        sa.ForeignKeyConstraint(["passkey_id"], ["passkeys.id"], name=op.f("fk_login_sessions_passkey_id_passkeys")),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_login_sessions")),
    )
    op.create_index("ix_login_sessions_account", "login_sessions", ["account_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_login_sessions_account", table_name="login_sessions")
    op.drop_table("login_sessions")
    op.drop_index("ix_break_glass_account", table_name="break_glass_grants")
    op.drop_table("break_glass_grants")
    op.drop_table("api_tokens")
    op.drop_table("webauthn_ceremonies")
    op.drop_index("ix_security_events_account", table_name="security_events")
    op.drop_table("security_events")
    op.drop_index(op.f("ix_recovery_codes_account_id"), table_name="recovery_codes")
    op.drop_table("recovery_codes")
    op.drop_index("ix_passkeys_account", table_name="passkeys")
    op.drop_table("passkeys")
    op.drop_index("ix_notices_account", table_name="notices")
    op.drop_table("notices")
    op.drop_table("invitations")
    op.drop_table("api_clients")
    op.drop_index("ix_iban_changes_professional", table_name="iban_changes")
    op.drop_table("iban_changes")
    op.drop_table("accounts")
    op.drop_index(op.f("ix_seen_jtis_expires_at"), table_name="seen_jtis")
    op.drop_table("seen_jtis")
    op.drop_table("rate_counters")
    op.drop_table("outbox")
    op.drop_table("oidc_flows")

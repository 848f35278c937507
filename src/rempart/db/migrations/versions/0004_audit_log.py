"""The audit log: append-only events partitioned by month, the Merkle tree's head and stored
subtree hashes, signed checkpoints, and events staged by write transactions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

Hand-written: alembic does not model partitioned tables.

* `audit.events` holds each event's canonical bytes (`body`), its tree position (`seq`) and
  its leaf hash (`leaf`, an untrusted hint: `verify` recomputes it, and uses stored hints
  only where they add up to a signed root, to point at the exact event tampered with).
  The columns the two audit questions filter on (`at`, account, client, network, subject)
  are copies of values in `body`, written with it; `rempart audit verify` checks every copy
  against the bytes. (Generated columns would parse the JSON four times per row: they made
  appends three times slower.)
* A trigger refuses UPDATE, DELETE and TRUNCATE: tampering needs an owner who first disables
  it, and even then `verify` finds it against the signed checkpoints.
* The tenant and platform groups of migration 0002 get nothing here: only the platform's
  owner role writes, and reads go through the service layer.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE SCHEMA audit;
REVOKE ALL ON SCHEMA audit FROM PUBLIC;

CREATE TABLE audit.events (
    seq bigint NOT NULL,
    logged_at timestamptz NOT NULL,
    at timestamptz NOT NULL,
    body bytea NOT NULL,
    leaf bytea NOT NULL,
    account_id uuid,
    api_client_id uuid,
    network text,
    subject_id uuid,
    PRIMARY KEY (at, seq)
) PARTITION BY RANGE (at);
CREATE TABLE audit.events_default PARTITION OF audit.events DEFAULT;

CREATE INDEX ix_audit_events_seq ON audit.events (seq);
CREATE INDEX ix_audit_events_subject ON audit.events (subject_id, at) WHERE subject_id IS NOT NULL;
CREATE INDEX ix_audit_events_account ON audit.events (account_id, at) WHERE account_id IS NOT NULL;
CREATE INDEX ix_audit_events_client ON audit.events (api_client_id, at) WHERE api_client_id IS NOT NULL;
CREATE INDEX ix_audit_events_network ON audit.events (network, at) WHERE network IS NOT NULL;

CREATE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON audit.events
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON audit.events
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON audit.events_default
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

-- Events of write transactions wait here (same transaction as the write) until the next
-- batch gives them their place in the tree, a fraction of a second later.
CREATE TABLE audit.pending (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL,
    body bytea NOT NULL,
    account_id uuid,
    api_client_id uuid,
    network text,
    subject_id uuid
);

-- One row: the tree's size and its frontier (the roots of its perfect subtrees). Each batch
-- locks it, so batches from every process of the platform append in one order.
CREATE TABLE audit.head (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    size bigint NOT NULL,
    frontier bytea NOT NULL,
    logged_us bigint NOT NULL  -- the last sequencing time: the next batch's is never earlier
);
INSERT INTO audit.head (size, frontier, logged_us) VALUES (0, '\x0000000000000000', 0);

-- Moves the head only from the frontier the caller knows, and never back in time: a batch
-- that lost the race to another process fails (serialization failure) and is retried on the
-- new head.
CREATE FUNCTION audit.advance(expected bytea, new_size bigint, new_frontier bytea, new_logged_us bigint)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- The whole frontier must match (its first 8 bytes are the size): a stale copy of the head
    -- at the right size, after a restore say, cannot extend a tree it does not know.
    UPDATE audit.head
    SET size = new_size, frontier = new_frontier, logged_us = new_logged_us
    WHERE frontier = expected AND logged_us <= new_logged_us;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the audit head moved' USING ERRCODE = 'serialization_failure';
    END IF;
END $$;

-- Hashes of perfect subtrees of 256 leaves and more, so proofs need no full recomputation.
-- Untrusted like everything in the database: a proof built from a forged node fails its check.
CREATE TABLE audit.nodes (
    level smallint NOT NULL,
    index bigint NOT NULL,
    hash bytea NOT NULL,
    PRIMARY KEY (level, index)
);

CREATE TABLE audit.checkpoints (
    size bigint PRIMARY KEY,
    root bytea NOT NULL,
    note text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON audit.checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();

ALTER TABLE data_keys DROP CONSTRAINT ck_data_keys_purpose;
ALTER TABLE data_keys ADD CONSTRAINT ck_data_keys_purpose CHECK (purpose IN ('field', 'index', 'signing'));
"""

DOWNGRADE = """
ALTER TABLE data_keys DROP CONSTRAINT ck_data_keys_purpose;
ALTER TABLE data_keys ADD CONSTRAINT ck_data_keys_purpose CHECK (purpose IN ('field', 'index'));
DROP SCHEMA audit CASCADE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)

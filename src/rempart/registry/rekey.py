"""Re-encryption after a key rotation (`rempart keys rewrap`) and retirement of old keys.

Rewrap walks every encrypted table in batches: rows still under a *retiring* data key are
decrypted and re-encrypted under their owner's active key, one short transaction per
batch (`SKIP LOCKED`), so it runs beside normal traffic and can be stopped and resumed.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from rempart.crypto import fields
from rempart.crypto.keystore import Keystore
from rempart.crypto.models import DataKeyRow
from rempart.registry.sealing import ENCRYPTED_COLUMNS


def rows_under(session: Session, key_ids: list[int]) -> int:
    if not key_ids:
        return 0
    total = 0
    for table in ENCRYPTED_COLUMNS:
        total += int(
            session.execute(
                text(f"SELECT count(*) FROM {table} WHERE dek_id = ANY(:ids)"), {"ids": key_ids}
            ).scalar_one()
        )
    return total


def rewrap(
    session: Session,
    keystore: Keystore,
    *,
    batch_rows: int = 2000,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Re-encrypt every row under a retiring data key; returns how many rows moved."""
    retiring = keystore.retiring_key_ids(session)
    if not retiring:
        return 0
    kek_of = dict(session.execute(select(DataKeyRow.id, DataKeyRow.kek_name).where(DataKeyRow.id.in_(retiring))).all())
    session.commit()
    active: dict[str, fields.DataKey] = {}
    moved = 0
    for table, columns in ENCRYPTED_COLUMNS.items():
        cts = ", ".join(f"{c}_ct" for c in columns)
        after = "00000000-0000-0000-0000-000000000000"
        while True:
            # Keyset pagination on the primary key: no index on dek_id is needed.
            batch = session.execute(
                text(
                    f"SELECT id, dek_id, {cts} FROM {table} WHERE dek_id = ANY(:ids) AND id > CAST(:after AS uuid)"
                    " ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED"
                ),
                {"ids": retiring, "n": batch_rows, "after": after},
            ).all()
            if not batch:
                session.commit()
                break
            updates = []
            for row in batch:
                row_id, dek_id, *cipher = row
                old = keystore.field_key(session, dek_id)
                new = active.get(kek_of[dek_id]) or active.setdefault(
                    kek_of[dek_id], keystore.active_field_key(session, kek_of[dek_id])
                )
                values: dict[str, object] = {"id": row_id, "dek": new.id}
                for column, ct in zip(columns, cipher, strict=True):
                    if ct is None:
                        values[column] = None
                    else:
                        plain = fields.decrypt(old, table, column, str(row_id), ct)
                        values[column] = fields.encrypt(new, table, column, str(row_id), plain)
                updates.append(values)
            assignments = ", ".join(f"{c}_ct = :{c}" for c in columns)
            session.execute(text(f"UPDATE {table} SET dek_id = :dek, {assignments} WHERE id = :id"), updates)
            session.commit()
            after = str(batch[-1][0])
            moved += len(updates)
            if on_progress:
                on_progress(len(updates))
    return moved


def retire_unused(session: Session, keystore: Keystore) -> list[int]:
    """Retire every retiring data key that no row uses any more; returns their ids."""
    retiring = keystore.retiring_key_ids(session)
    # Lock first (an import holding a key makes us wait), then count within the same transaction.
    session.execute(select(DataKeyRow.id).where(DataKeyRow.id.in_(retiring)).with_for_update())
    unused = [key_id for key_id in retiring if rows_under(session, [key_id]) == 0]
    keystore.retire(session, unused)
    session.commit()
    return unused


def key_status(session: Session) -> list[tuple[str, str, int, int, str]]:
    """(kek name, purpose, data key id, KEK version, state) for every data key."""
    rows = session.execute(
        select(
            DataKeyRow.kek_name, DataKeyRow.purpose, DataKeyRow.id, DataKeyRow.kek_version, DataKeyRow.state
        ).order_by(DataKeyRow.kek_name, DataKeyRow.id)
    ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


__all__ = ["key_status", "retire_unused", "rewrap", "rows_under"]

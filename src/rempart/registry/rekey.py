"""Re-encryption after a key rotation (`rempart keys rewrap`) and retirement of old keys.

Rewrap walks every encrypted table in batches: rows still under a *retiring* data key are
decrypted and re-encrypted under their owner's active key, one short transaction per
batch (`SKIP LOCKED`), so it runs beside normal traffic and can be stopped and resumed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from rempart.audit.service import Recorder
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
    audit: Recorder,
    batch_rows: int = 2000,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Re-encrypt every row under a retiring data key; returns how many rows moved. Each batch
    is one audit event (table and count), committed with the batch."""
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
            audit.wrote(session, "keys.rewrap", purpose="key-rotation", count=len(updates), detail={"table": table})
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


def reindex_insurer(
    session: Session,
    keystore: Keystore,
    *,
    amc_number: str,
    expected_population: int,
    audit: Recorder,
    batch_rows: int = 2000,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Re-size an insurer's blind indexes for a new expected population (CipherSweet's rule
    drifts when the real population differs from the declared one). One transaction, under
    the import lock: lookups see either the old indexes or the new ones, never a mix."""
    from rempart.crypto.blind_index import bits_for_population
    from rempart.crypto.keystore import kek_name_for_insurer
    from rempart.registry import sealing
    from rempart.registry.models import INSURER_ACTIVE, Insurer

    insurer = session.scalars(select(Insurer).where(Insurer.amc_number == amc_number)).one_or_none()
    if insurer is None or insurer.status != INSURER_ACTIVE:
        raise ValueError(f"no active insurer with AMC number {amc_number}")
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('rempart-import'), hashtext(:amc))"), {"amc": amc_number}
    )
    bits = bits_for_population(expected_population)
    index = keystore.index_keys(session, kek_name_for_insurer(amc_number), bits)

    def opened(table: str, column: str, row_id: object, dek_id: int, ct: bytes | None) -> str | None:
        if ct is None:
            return None
        return fields.decrypt(keystore.field_key(session, dek_id), table, column, str(row_id), ct)

    done = 0
    after = "00000000-0000-0000-0000-000000000000"
    while True:
        members = session.execute(
            text(
                "SELECT id, dek_id, member_number_ct FROM members WHERE insurer_id = :i AND id > CAST(:after AS uuid)"
                " ORDER BY id LIMIT :n"
            ),
            {"i": insurer.id, "after": after, "n": batch_rows},
        ).all()
        if not members:
            break
        updates = []
        for member_id, dek_id, number_ct in members:
            number = opened(sealing.MEMBERS, "member_number", member_id, dek_id, number_ct)
            assert number is not None
            updates.append({"id": member_id, "bidx": sealing.member_number_index(index, number)})
        session.execute(text("UPDATE members SET number_bidx = :bidx WHERE id = :id"), updates)
        after = str(members[-1][0])
    after = "00000000-0000-0000-0000-000000000000"
    while True:
        rows = session.execute(
            text(
                "SELECT b.id, b.dek_id, b.nir_ct, b.birth_date_ct, b.birth_rank, m.id, m.dek_id, m.member_number_ct,"
                " m.member_nir_ct FROM beneficiaries b JOIN members m ON m.id = b.member_id"
                " WHERE b.insurer_id = :i AND b.id > CAST(:after AS uuid) ORDER BY b.id LIMIT :n"
            ),
            {"i": insurer.id, "after": after, "n": batch_rows},
        ).all()
        if not rows:
            break
        updates = []
        for bid, dek_id, nir_ct, birth_ct, rank, member_id, member_dek, number_ct, member_nir_ct in rows:
            birth = dt.date.fromisoformat(opened(sealing.BENEFICIARIES, "birth_date", bid, dek_id, birth_ct) or "")
            nir = opened(sealing.BENEFICIARIES, "nir", bid, dek_id, nir_ct)
            number = opened(sealing.MEMBERS, "member_number", member_id, member_dek, number_ct) or ""
            member_nir = opened(sealing.MEMBERS, "member_nir", member_id, member_dek, member_nir_ct) or ""
            updates.append(
                {
                    "id": bid,
                    "card": sealing.card_index(index, amc_number, number, birth, rank),
                    "nir": sealing.nir_index(index, nir, birth) if nir else None,
                    "mnir": sealing.member_nir_index(index, member_nir, birth, rank),
                }
            )
        session.execute(
            text("UPDATE beneficiaries SET card_bidx = :card, nir_bidx = :nir, member_nir_bidx = :mnir WHERE id = :id"),
            updates,
        )
        audit.wrote(session, "keys.reindex", purpose="key-rotation", count=len(rows), detail={"insurer": amc_number})
        after = str(rows[-1][0])
        done += len(rows)
        if on_progress:
            on_progress(len(rows))
    insurer.index_bits = bits
    insurer.expected_population = expected_population
    session.commit()
    return done

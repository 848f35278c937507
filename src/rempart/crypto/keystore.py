"""Data keys: created, unwrapped, cached, rotated, retired and shredded.

Each owner (an insurer, or the platform for professionals) has a KEK in the key provider,
named by `kek_name_for_insurer` or PLATFORM_KEK, and in the `data_keys` table:
* one active *field* data key (new writes use it) and possibly older *retiring* ones that
  still decrypt rows not yet re-encrypted by `keys rewrap`;
* one *index* secret from which that owner's blind-index keys derive.
The table holds only wrapped forms. Unwrapped keys live in this process's memory.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from rempart.crypto import blind_index
from rempart.crypto.fields import DataKey
from rempart.crypto.models import (
    PURPOSE_FIELD,
    PURPOSE_INDEX,
    STATE_ACTIVE,
    STATE_RETIRED,
    STATE_RETIRING,
    DataKeyRow,
)
from rempart.crypto.provider import KeyDestroyedError, KeyProvider, WrappedKey

PLATFORM_KEK = "platform"


def kek_name_for_insurer(amc_number: str) -> str:
    return f"insurer-{amc_number}"


def _wrap_context(key_id: int, purpose: str, kek_name: str) -> bytes:
    return f"data_keys|{key_id}|{purpose}|{kek_name}".encode()


class KeyUnavailableError(RuntimeError):
    """The data key cannot be unwrapped: its KEK (or that version) was destroyed."""


@dataclass(frozen=True, slots=True)
class IndexKeys:
    """The blind-index keys of one owner."""

    nir: blind_index.IndexKey
    card: blind_index.IndexKey
    member_nir: blind_index.IndexKey
    member_number: blind_index.IndexKey
    professional: blind_index.IndexKey


# Unwrapped keys are dropped from a process's memory this long after it began keeping them, and
# read again (wrapped, from the database) when next needed: a key shredded by another process
# (another worker of the server, the CLI) stops reading here within this time.
KEYS_KEPT_S = 60.0


class Keystore:
    def __init__(self, provider: KeyProvider) -> None:
        self.provider = provider
        self._lock = threading.Lock()
        self._field_keys: dict[int, DataKey] = {}
        self._index_secrets: dict[str, bytes] = {}
        self._index_keys: dict[tuple[str, int], IndexKeys] = {}  # derived once, not on every lookup
        self._secrets: dict[tuple[str, str], bytes] = {}
        self._remembered: dict[str, DataKey] = {}  # active field keys, by owner
        self._kept_since = time.monotonic()

    def forget(self) -> None:
        """Drop every unwrapped key from memory (after a shred, a rotation, in tests)."""
        with self._lock:
            self._field_keys.clear()
            self._index_secrets.clear()
            self._index_keys.clear()
            self._secrets.clear()
            self._remembered.clear()
            self._kept_since = time.monotonic()
        blind_index.forget_keys()

    def _forget_if_kept_too_long(self) -> None:
        if time.monotonic() - self._kept_since > KEYS_KEPT_S:
            self.forget()

    # -- creation --------------------------------------------------------------------

    def create_owner_keys(self, session: Session, *, kek_name: str, insurer_id: uuid.UUID | None) -> None:
        """Create the owner's KEK (if needed), a field data key and an index secret."""
        self.provider.ensure_key(kek_name)
        for purpose in (PURPOSE_FIELD, PURPOSE_INDEX):
            exists = session.scalar(
                select(DataKeyRow.id).where(
                    DataKeyRow.kek_name == kek_name,
                    DataKeyRow.purpose == purpose,
                    DataKeyRow.state == STATE_ACTIVE,
                )
            )
            if exists is None:
                self._insert_key(session, kek_name=kek_name, insurer_id=insurer_id, purpose=purpose)

    def _insert_key(
        self,
        session: Session,
        *,
        kek_name: str,
        insurer_id: uuid.UUID | None,
        purpose: str,
        secret: bytes | None = None,
    ) -> int:
        key_id = int(session.execute(text("SELECT nextval(pg_get_serial_sequence('data_keys', 'id'))")).scalar_one())
        material = secret if secret is not None else secrets.token_bytes(32)
        wrapped = self.provider.wrap(kek_name, material, _wrap_context(key_id, purpose, kek_name))
        session.add(
            DataKeyRow(
                id=key_id,
                insurer_id=insurer_id,
                kek_name=kek_name,
                purpose=purpose,
                kek_version=wrapped.kek_version,
                wrapped=wrapped.blob,
                state=STATE_ACTIVE,
            )
        )
        session.flush()
        return key_id

    # -- use -------------------------------------------------------------------------

    def _unwrap(self, row: DataKeyRow) -> bytes:
        if row.wrapped is None:
            raise KeyUnavailableError(f"data key {row.id} was retired")
        try:
            return self.provider.unwrap(
                WrappedKey(row.kek_name, row.kek_version, row.wrapped),
                _wrap_context(row.id, row.purpose, row.kek_name),
            )
        except KeyDestroyedError as exc:
            raise KeyUnavailableError(f"data key {row.id}: {exc}") from exc

    def field_key(self, session: Session, key_id: int) -> DataKey:
        self._forget_if_kept_too_long()
        key = self._field_keys.get(key_id)
        if key is None:
            row = session.get(DataKeyRow, key_id)
            if row is None or row.purpose != PURPOSE_FIELD:
                raise KeyUnavailableError(f"data key {key_id} does not exist")
            key = DataKey.from_bytes(key_id, self._unwrap(row))
            with self._lock:
                self._field_keys[key_id] = key
        return key

    def active_field_key(self, session: Session, kek_name: str) -> DataKey:
        key_id = session.scalar(
            select(DataKeyRow.id).where(
                DataKeyRow.kek_name == kek_name,
                DataKeyRow.purpose == PURPOSE_FIELD,
                DataKeyRow.state == STATE_ACTIVE,
            )
        )
        if key_id is None:
            raise KeyUnavailableError(f"{kek_name} has no active data key")
        return self.field_key(session, key_id)

    def remembered_field_key(self, session: Session, kek_name: str) -> DataKey:
        """The owner's active field key, remembered (no query once kept): what a lookup that
        found nobody decrypts its decoy with, as fast as a hit finds its keys in memory."""
        self._forget_if_kept_too_long()
        key = self._remembered.get(kek_name)
        if key is None:
            key = self.active_field_key(session, kek_name)
            with self._lock:
                self._remembered[kek_name] = key
        return key

    def index_keys(self, session: Session, kek_name: str, bits: int) -> IndexKeys:
        self._forget_if_kept_too_long()
        derived = self._index_keys.get((kek_name, bits))
        if derived is not None:
            return derived
        secret = self._index_secrets.get(kek_name)
        if secret is None:
            row = session.scalars(
                select(DataKeyRow).where(
                    DataKeyRow.kek_name == kek_name,
                    DataKeyRow.purpose == PURPOSE_INDEX,
                    DataKeyRow.state == STATE_ACTIVE,
                )
            ).one_or_none()
            if row is None:
                raise KeyUnavailableError(f"{kek_name} has no index secret")
            secret = self._unwrap(row)
            with self._lock:
                self._index_secrets[kek_name] = secret
        member_bits = max(blind_index.MIN_BITS, bits - 1)  # about half as many members as beneficiaries
        derived = IndexKeys(
            nir=blind_index.derive_index_key(secret, blind_index.BENEFICIARY_NIR, bits),
            card=blind_index.derive_index_key(secret, blind_index.BENEFICIARY_CARD, bits),
            member_nir=blind_index.derive_index_key(secret, blind_index.BENEFICIARY_MEMBER_NIR, bits),
            member_number=blind_index.derive_index_key(secret, blind_index.MEMBER_NUMBER, member_bits),
            professional=blind_index.derive_index_key(
                secret,
                blind_index.PROFESSIONAL_ID,
                blind_index.bits_for_population(blind_index.NATIONAL_PROFESSIONALS),
            ),
        )
        with self._lock:
            self._index_keys[(kek_name, bits)] = derived
        return derived

    def ensure_secret(self, session: Session, kek_name: str, purpose: str) -> None:
        """Create the owner's active secret of this purpose if it has none (a transaction-level
        advisory lock keeps two starting workers from both creating one)."""
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": f"keys|{kek_name}|{purpose}"})
        self.provider.ensure_key(kek_name)
        exists = session.scalar(
            select(DataKeyRow.id).where(
                DataKeyRow.kek_name == kek_name, DataKeyRow.purpose == purpose, DataKeyRow.state == STATE_ACTIVE
            )
        )
        if exists is None:
            self._insert_key(session, kek_name=kek_name, insurer_id=None, purpose=purpose)

    def secret(self, session: Session, kek_name: str, purpose: str) -> bytes:
        """The owner's active secret of a purpose (a signing seed, an index secret), unwrapped."""
        self._forget_if_kept_too_long()
        cached = self._secrets.get((kek_name, purpose))
        if cached is not None:
            return cached
        row = session.scalars(
            select(DataKeyRow).where(
                DataKeyRow.kek_name == kek_name, DataKeyRow.purpose == purpose, DataKeyRow.state == STATE_ACTIVE
            )
        ).one_or_none()
        if row is None:
            raise KeyUnavailableError(f"{kek_name} has no active {purpose} secret")
        value = self._unwrap(row)
        with self._lock:
            self._secrets[(kek_name, purpose)] = value
        return value

    # -- rotation and retirement -----------------------------------------------------

    def rotate(self, session: Session, kek_name: str) -> int:
        """New KEK version, new field data key for new writes; the index secret is rewrapped."""
        version = self.provider.rotate(kek_name)
        rows = session.scalars(
            select(DataKeyRow)
            .where(DataKeyRow.kek_name == kek_name, DataKeyRow.state == STATE_ACTIVE)
            .with_for_update()
        ).all()
        insurer_id = rows[0].insurer_id if rows else None
        for row in rows:
            if row.purpose == PURPOSE_FIELD:
                row.state = STATE_RETIRING
            else:
                secret = self._unwrap(row)
                wrapped = self.provider.wrap(kek_name, secret, _wrap_context(row.id, row.purpose, kek_name))
                row.kek_version, row.wrapped = wrapped.kek_version, wrapped.blob
        session.flush()
        self._insert_key(session, kek_name=kek_name, insurer_id=insurer_id, purpose=PURPOSE_FIELD)
        return version

    def retiring_key_ids(self, session: Session, kek_name: str | None = None) -> list[int]:
        query = select(DataKeyRow.id).where(DataKeyRow.state == STATE_RETIRING)
        if kek_name is not None:
            query = query.where(DataKeyRow.kek_name == kek_name)
        return list(session.scalars(query.order_by(DataKeyRow.id)))

    def retire(self, session: Session, key_ids: list[int]) -> None:
        """Erase the wrapped form of data keys no row uses any more, then the KEK versions
        no remaining key needs. Callers check first that no ciphertext still uses them."""
        if not key_ids:
            return
        # Imports hold their data key FOR SHARE: this waits for them to finish.
        session.execute(select(DataKeyRow.id).where(DataKeyRow.id.in_(key_ids)).with_for_update())
        kek_names = set(session.scalars(select(DataKeyRow.kek_name).where(DataKeyRow.id.in_(key_ids))))
        session.execute(update(DataKeyRow).where(DataKeyRow.id.in_(key_ids)).values(state=STATE_RETIRED, wrapped=None))
        session.flush()
        for kek_name in kek_names:
            lowest = session.scalar(
                select(DataKeyRow.kek_version)
                .where(DataKeyRow.kek_name == kek_name, DataKeyRow.state != STATE_RETIRED)
                .order_by(DataKeyRow.kek_version)
                .limit(1)
            )
            if lowest is not None:
                self.provider.retire_versions_below(kek_name, lowest)
        with self._lock:
            for key_id in key_ids:
                self._field_keys.pop(key_id, None)

    def shred(self, session: Session, kek_name: str) -> None:
        """Destroy the owner's KEK and every wrapped data key: nothing under them reads again."""
        self.provider.destroy(kek_name)
        session.execute(
            update(DataKeyRow).where(DataKeyRow.kek_name == kek_name).values(state=STATE_RETIRED, wrapped=None)
        )
        self.forget()

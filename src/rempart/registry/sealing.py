"""Turning validated registry values into what the tables store, and back (pure).

Every personal field is encrypted under the owner's active data key with associated data
naming its table, column and row; lookups use the owner's blind indexes. Nothing here
touches the database, so import workers can run it in parallel.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from rempart.crypto import fields
from rempart.crypto.fields import DataKey
from rempart.crypto.keystore import IndexKeys
from rempart.registry.feed import FeedRow

MEMBERS = "members"
BENEFICIARIES = "beneficiaries"
PROFESSIONALS = "professionals"

# What each table encrypts; `keys rewrap` walks these.
ENCRYPTED_COLUMNS: dict[str, tuple[str, ...]] = {
    MEMBERS: ("member_number", "member_nir"),
    BENEFICIARIES: ("nir", "family_name", "first_name", "birth_name", "birth_date"),
    PROFESSIONALS: ("identifier", "family_name", "first_name", "iban", "email", "phone"),
    "iban_changes": ("new_iban",),
    "outbox": ("recipient",),
}


@dataclass(frozen=True, slots=True)
class SealedMember:
    id: uuid.UUID
    dek_id: int
    member_number_ct: bytes
    member_nir_ct: bytes
    number_bidx: int


@dataclass(frozen=True, slots=True)
class SealedBeneficiary:
    id: uuid.UUID
    dek_id: int
    nir_ct: bytes | None
    family_name_ct: bytes
    first_name_ct: bytes
    birth_name_ct: bytes | None
    birth_date_ct: bytes
    nir_bidx: int | None
    card_bidx: int
    member_nir_bidx: int


def card_index(index: IndexKeys, amc_number: str, member_number: str, birth_date: dt.date, rank: int) -> int:
    return index.card.value(amc_number, member_number, birth_date.isoformat(), str(rank))


def nir_index(index: IndexKeys, nir: str, birth_date: dt.date) -> int:
    return index.nir.value(nir, birth_date.isoformat())


def member_nir_index(index: IndexKeys, member_nir: str, birth_date: dt.date, rank: int) -> int:
    return index.member_nir.value(member_nir, birth_date.isoformat(), str(rank))


def member_number_index(index: IndexKeys, member_number: str) -> int:
    return index.member_number.value(member_number)


def seal_member(key: DataKey, index: IndexKeys, member_id: uuid.UUID, row: FeedRow) -> SealedMember:
    number_ct, nir_ct = fields.encrypt_row(
        key, MEMBERS, str(member_id), [("member_number", row.member_number), ("member_nir", row.member_nir)]
    )
    assert number_ct is not None and nir_ct is not None
    return SealedMember(
        id=member_id,
        dek_id=key.id,
        member_number_ct=number_ct,
        member_nir_ct=nir_ct,
        number_bidx=member_number_index(index, row.member_number),
    )


def seal_beneficiary(
    key: DataKey, index: IndexKeys, amc_number: str, beneficiary_id: uuid.UUID, row: FeedRow
) -> SealedBeneficiary:
    birth_date = row.birth_date.isoformat()
    nir_ct, family_ct, first_ct, birth_name_ct, birth_date_ct = fields.encrypt_row(
        key,
        BENEFICIARIES,
        str(beneficiary_id),
        [
            ("nir", row.beneficiary_nir),
            ("family_name", row.family_name),
            ("first_name", row.first_name),
            ("birth_name", row.birth_name),
            ("birth_date", birth_date),
        ],
    )
    assert family_ct is not None and first_ct is not None and birth_date_ct is not None
    return SealedBeneficiary(
        id=beneficiary_id,
        dek_id=key.id,
        nir_ct=nir_ct,
        family_name_ct=family_ct,
        first_name_ct=first_ct,
        birth_name_ct=birth_name_ct,
        birth_date_ct=birth_date_ct,
        nir_bidx=nir_index(index, row.beneficiary_nir, row.birth_date) if row.beneficiary_nir else None,
        card_bidx=card_index(index, amc_number, row.member_number, row.birth_date, row.birth_rank),
        member_nir_bidx=member_nir_index(index, row.member_nir, row.birth_date, row.birth_rank),
    )


def open_field(key: DataKey, table: str, column: str, row_id: uuid.UUID, ciphertext: bytes | None) -> str | None:
    return None if ciphertext is None else fields.decrypt(key, table, column, str(row_id), ciphertext)

"""Keyed blind indexes for exact-match lookups on encrypted fields.

A blind index is HMAC-SHA256 under a key derived (HKDF) per index from a secret held
only in wrapped form, truncated to a few bits so that many different people share each
value. A lookup returns a handful of candidate rows that are decrypted and compared;
someone holding a dump, even with the index key, cannot tell which person a value
belongs to.

Sizing follows CipherSweet's rule: with R rows under one key and an index of `bits`
bits, a lookup returns on average C = R / 2**bits candidates, and we want
2 <= C < sqrt(R): at least two candidates per value (no value singles a person out) and
far fewer than sqrt(R) (lookups stay cheap). We aim for C ~= 4, "a handful":

* national scale, R = 40,000,000 beneficiaries: sqrt(R) ~= 6,325; bits = 23 gives
  C = 40e6 / 8,388,608 ~= 4.8 (allowed range of bits: 13..24).
* each insurer has its own index secret (destroyed when the insurer is shredded), so R
  is the insurer's declared population and `bits_for_population` picks its width:
  e.g. R = 5,000,000 -> 20 bits, C ~= 4.8; R = 200,000 -> 16 bits, C ~= 3.1.
* professionals (platform key), R ~= 1,200,000 RPPS/ADELI holders: 18 bits, C ~= 4.6.
"""

from __future__ import annotations

import hmac
import math
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

TARGET_CANDIDATES = 4.0
MIN_BITS = 4
MAX_BITS = 31  # values are stored in a PostgreSQL integer
NATIONAL_BENEFICIARIES = 40_000_000
NATIONAL_PROFESSIONALS = 1_200_000

# Index names: each gets its own derived key, so values of one index say nothing about another.
BENEFICIARY_NIR = "beneficiary.nir+birth_date"
BENEFICIARY_CARD = "beneficiary.amc+member_number+birth_date+rank"
BENEFICIARY_MEMBER_NIR = "beneficiary.member_nir+birth_date+rank"
MEMBER_NUMBER = "member.member_number"
PROFESSIONAL_ID = "professional.rpps_or_adeli"


def bits_for_population(rows: int) -> int:
    """Index width giving about TARGET_CANDIDATES candidates, within 2 <= C < sqrt(R)."""
    rows = max(rows, 64)
    bits = round(math.log2(rows / TARGET_CANDIDATES))
    upper = math.floor(math.log2(rows / 2))  # C >= 2
    lower = math.floor(math.log2(rows / math.sqrt(rows))) + 1  # C < sqrt(R)
    return max(MIN_BITS, min(MAX_BITS, max(lower, min(upper, bits))))


def expected_candidates(rows: int, bits: int) -> float:
    return float(rows / 2**bits)


@dataclass(frozen=True, slots=True)
class IndexKey:
    name: str
    key: bytes = field(repr=False)
    bits: int

    def value(self, *parts: str) -> int:
        # Unit separator between parts, so ("ab", "c") and ("a", "bc") differ.
        mac = _keyed(self.key).copy()
        mac.update("\x1f".join(parts).encode())
        return int.from_bytes(mac.digest()[:4], "big") >> (32 - self.bits)


_KEYED: dict[bytes, hmac.HMAC] = {}


def forget_keys() -> None:
    _KEYED.clear()


def _keyed(key: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 already keyed (pads hashed once), copied for each value: imports compute
    millions of index values and this halves their cost."""
    base = _KEYED.get(key)
    if base is None:
        base = _KEYED[key] = hmac.new(key, digestmod="sha256")
    return base


def derive_index_key(secret: bytes, name: str, bits: int) -> IndexKey:
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"index width {bits} outside {MIN_BITS}..{MAX_BITS}")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"rempart/blind-index/v1/{name}".encode())
    return IndexKey(name, hkdf.derive(secret), bits)

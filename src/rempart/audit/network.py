"""What the log keeps of a caller's network address: the address sealed (AES-256-GCM under the
audit data key, opened only by security-officer tooling) and a keyed hash of its /24 (IPv4) or
/48 (IPv6) prefix, so "everything from this network" is a query without the address in clear."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import uuid

from rempart.audit.events import Network
from rempart.crypto import fields
from rempart.crypto.fields import DataKey

AUDIT_KEK = "audit"
IP_TABLE, IP_COLUMN = "audit_events", "ip"


def prefix(ip: str) -> str:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    length = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{length}", strict=False))


@functools.lru_cache(maxsize=65_536)
def prefix_hash(secret: bytes, ip: str) -> str:
    """Keyed, so the 16 million /24 prefixes cannot be tried one by one without the key.
    (Cached: a busy platform sees the same addresses again and again.)"""
    key = hashlib.sha256(b"rempart/audit/network|" + secret).digest()
    return hmac.new(key, prefix(ip).encode(), hashlib.sha256).hexdigest()[:32]


def seal(key: DataKey, secret: bytes, ip: str | None, event_id: uuid.UUID) -> Network:
    if not ip:
        return Network()
    try:
        hashed = prefix_hash(secret, ip)
    except ValueError:  # not an address (a test client's name): keep the sealed text only
        hashed = None
    sealed = fields.encrypt(key, IP_TABLE, IP_COLUMN, str(event_id), ip)
    return Network(base64.b64encode(sealed).decode(), hashed)


def unseal(key: DataKey, sealed: str, event_id: uuid.UUID) -> str:
    return fields.decrypt(key, IP_TABLE, IP_COLUMN, str(event_id), base64.b64decode(sealed))

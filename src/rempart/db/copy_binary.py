"""Rows encoded in PostgreSQL's binary COPY format, so import workers can prepare the bytes
and the process that owns the transaction only concatenates them.

Format: a header, then per row an int16 field count and per field an int32 length (-1 for
NULL) and the value in its binary send format; a trailer of int16 -1."""

from __future__ import annotations

import datetime as dt
import struct
import uuid

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
NULL = struct.pack(">i", -1)
_EPOCH = dt.date(2000, 1, 1).toordinal()
_INT4 = struct.Struct(">ii")
_INT2 = struct.Struct(">ih")
_LEN = struct.Struct(">i")
_UUID_LEN = _LEN.pack(16)


def count(fields: int) -> bytes:
    return struct.pack(">h", fields)


def uuid_(value: uuid.UUID) -> bytes:
    return _UUID_LEN + value.bytes


def uuid_or_null(value: uuid.UUID | None) -> bytes:
    return NULL if value is None else _UUID_LEN + value.bytes


_POSTGRES_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970-01-01
_INT8 = struct.Struct(">iq")


def timestamptz_us(micros_since_1970: int) -> bytes:
    """A timestamptz given as exact microseconds since the Unix epoch."""
    return _INT8.pack(8, micros_since_1970 - _POSTGRES_EPOCH_US)


def int8(value: int) -> bytes:
    return _INT8.pack(8, value)


def int4(value: int | None) -> bytes:
    return NULL if value is None else _INT4.pack(4, value)


def int2(value: int) -> bytes:
    return _INT2.pack(2, value)


def bytea(value: bytes | None) -> bytes:
    return NULL if value is None else _LEN.pack(len(value)) + value


def text(value: str | None) -> bytes:
    return NULL if value is None else bytea(value.encode())


def date(value: dt.date | None) -> bytes:
    return NULL if value is None else _INT4.pack(4, value.toordinal() - _EPOCH)

"""Local keyring file: the default key provider.

The keyring is a JSON file (mode 0600) kept outside the database folder, so a copy of
the database or of its backups never holds a key-encryption key. Each KEK has numbered
versions of 32 random bytes; wrapping is AES-256-GCM under the current version with the
caller's context as associated data. Writes go through a temporary file and an atomic
rename under an exclusive lock, so concurrent processes never see half a keyring.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rempart.crypto.provider import KeyDestroyedError, KeyProviderError, WrappedKey

KEYRING_FORMAT = 1
_NONCE_BYTES = 12


class LocalKeyringProvider:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")

    # -- file handling -------------------------------------------------------------------

    def _ensure_dir(self) -> None:
        # A folder we create is private; an existing one is the operator's to set.
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, mode=0o700)

    @contextmanager
    def _locked(self, *, write: bool) -> Iterator[dict[str, Any]]:
        self._ensure_dir()
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            data = self._read()
            yield data
            if write:
                self._write(data)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"format": KEYRING_FORMAT, "keys": {}}
        mode = self.path.stat().st_mode & 0o777
        if mode & 0o077:
            raise KeyProviderError(f"keyring {self.path} is readable by others (mode {mode:o}); chmod 600 it")
        data: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        if data.get("format") != KEYRING_FORMAT:
            raise KeyProviderError(f"keyring {self.path} has an unknown format")
        return data

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @staticmethod
    def _entry(data: dict[str, Any], kek_name: str) -> dict[str, Any]:
        entry: dict[str, Any] | None = data["keys"].get(kek_name)
        if entry is None:
            raise KeyDestroyedError(f"key {kek_name!r} does not exist in the keyring (destroyed or never created)")
        return entry

    @staticmethod
    def _aad(kek_name: str, version: int, context: bytes) -> bytes:
        return b"rempart-kek-wrap/v1|" + kek_name.encode() + b"|" + str(version).encode() + b"|" + context

    # -- KeyProvider ---------------------------------------------------------------------

    def ensure_key(self, kek_name: str) -> int:
        with self._locked(write=True) as data:
            entry = data["keys"].get(kek_name)
            if entry is None:
                entry = {"current": 1, "versions": {"1": _new_key()}}
                data["keys"][kek_name] = entry
            return int(entry["current"])

    def current_version(self, kek_name: str) -> int:
        with self._locked(write=False) as data:
            return int(self._entry(data, kek_name)["current"])

    def wrap(self, kek_name: str, plaintext: bytes, context: bytes) -> WrappedKey:
        with self._locked(write=False) as data:
            entry = self._entry(data, kek_name)
            version = int(entry["current"])
            key = base64.b64decode(entry["versions"][str(version)])
        nonce = secrets.token_bytes(_NONCE_BYTES)
        blob = nonce + AESGCM(key).encrypt(nonce, plaintext, self._aad(kek_name, version, context))
        return WrappedKey(kek_name, version, blob)

    def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        with self._locked(write=False) as data:
            entry = self._entry(data, wrapped.kek_name)
            encoded = entry["versions"].get(str(wrapped.kek_version))
        if encoded is None:
            raise KeyDestroyedError(f"version {wrapped.kek_version} of key {wrapped.kek_name!r} was retired")
        nonce, body = wrapped.blob[:_NONCE_BYTES], wrapped.blob[_NONCE_BYTES:]
        try:
            aad = self._aad(wrapped.kek_name, wrapped.kek_version, context)
            return AESGCM(base64.b64decode(encoded)).decrypt(nonce, body, aad)
        except InvalidTag as exc:
            raise KeyProviderError(f"wrapped key for {wrapped.kek_name!r} does not authenticate") from exc

    def rotate(self, kek_name: str) -> int:
        with self._locked(write=True) as data:
            entry = self._entry(data, kek_name)
            version = int(entry["current"]) + 1
            entry["versions"][str(version)] = _new_key()
            entry["current"] = version
            return version

    def retire_versions_below(self, kek_name: str, version: int) -> None:
        with self._locked(write=True) as data:
            entry = self._entry(data, kek_name)
            if version > int(entry["current"]):
                raise KeyProviderError(f"cannot retire the current version of {kek_name!r}")
            entry["versions"] = {v: k for v, k in entry["versions"].items() if int(v) >= version}

    def destroy(self, kek_name: str) -> None:
        with self._locked(write=True) as data:
            data["keys"].pop(kek_name, None)

    def exists(self, kek_name: str) -> bool:
        with self._locked(write=False) as data:
            return kek_name in data["keys"]


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()

"""The key provider port: where key-encryption keys (KEKs) live.

KEKs never leave the provider in a form the database could hold. The platform only
asks the provider to wrap and unwrap data keys; the wrapped blobs are what the
database stores. Destroying a KEK (crypto-shredding) makes every data key wrapped
under it, and so every ciphertext under those data keys, unreadable for good,
including in older database backups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class KeyProviderError(RuntimeError):
    """The provider refused or failed an operation; the message names the key, never key bytes."""


class KeyDestroyedError(KeyProviderError):
    """The key (or that version of it) was destroyed or retired: what it wrapped is gone."""


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key wrapped by version `kek_version` of the KEK named `kek_name`."""

    kek_name: str
    kek_version: int
    blob: bytes


class KeyProvider(Protocol):
    """Holds versioned KEKs by name and wraps/unwraps data keys with them.

    `context` is authenticated associated data: unwrapping with another context fails.
    """

    def ensure_key(self, kek_name: str) -> int:
        """Create the KEK if it does not exist; return its current version."""

    def current_version(self, kek_name: str) -> int:
        """The version new wraps use; raises KeyDestroyedError if the key is gone."""

    def wrap(self, kek_name: str, plaintext: bytes, context: bytes) -> WrappedKey:
        """Wrap a data key under the current version."""

    def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        """Unwrap; raises KeyDestroyedError if that version no longer exists."""

    def rotate(self, kek_name: str) -> int:
        """Add a new version and make it current; older versions still unwrap."""

    def retire_versions_below(self, kek_name: str, version: int) -> None:
        """Destroy every version older than `version` (they can no longer unwrap)."""

    def destroy(self, kek_name: str) -> None:
        """Destroy every version of the KEK. Irreversible."""

    def exists(self, kek_name: str) -> bool:
        """Whether any version of the KEK still exists."""

"""HashiCorp Vault Transit secrets engine as the key provider.

Each Rempart KEK is one Transit key of type ``aes256-gcm96``; its Transit versions are
the KEK versions. Wrapping a data key is ``POST /v1/<mount>/encrypt/<key>`` with the
caller's context passed as ``associated_data`` (AES-GCM additional data), so the
wrapped blob is Vault's own ciphertext string (``vault:v<N>:<base64>``) and the key
material never leaves Vault.

Destruction maps onto Vault like this:

* ``retire_versions_below(v)`` raises ``min_decryption_version`` (and
  ``min_encryption_version``) to ``v``, then *trims* the key ring to
  ``min_available_version = v``: Vault deletes the older versions' material for good,
  so the floor cannot be lowered again to bring them back.
* ``destroy`` sets ``deletion_allowed`` and deletes the key.

Error handling: every HTTP or transport failure becomes a ``KeyProviderError`` whose
message names the operation, the key and the HTTP status, never the token, a
plaintext or a ciphertext. An unwrap that fails because the key or that version is
gone becomes ``KeyDestroyedError``; an unwrap that fails for any other reason (a
wrong context, a corrupted blob) stays a plain ``KeyProviderError``. Vault answers
both cases with the same status (400), so after a failed decrypt the provider reads
the key's metadata to tell them apart instead of parsing Vault's error wording.
"""

from __future__ import annotations

import base64
import binascii
import re
from types import TracebackType
from typing import Any, Final, Self

import httpx

from rempart.crypto.provider import KeyDestroyedError, KeyProviderError, WrappedKey

KEY_TYPE: Final = "aes256-gcm96"
_AEAD_KEY_TYPES: Final = frozenset({"aes128-gcm96", "aes256-gcm96", "chacha20-poly1305"})

# Vault's `framework.GenericNameRegex`: word characters, '-', '.', '@', starting and
# ending with a word character (ASCII only: Go's \w is ASCII).
_VAULT_NAME: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.@-]*[A-Za-z0-9_])?")
_MOUNT: Final = re.compile(r"[A-Za-z0-9_.@-]+(?:/[A-Za-z0-9_.@-]+)*")
_CIPHERTEXT: Final = re.compile(r"vault:v([1-9][0-9]{0,9}):([A-Za-z0-9+/=]+)")
_CIPHERTEXT_ANYWHERE: Final = re.compile(r"vault:v[0-9]+:[A-Za-z0-9+/=]*")
_LITERAL: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_MAX_ERROR_CHARS: Final = 200


def vault_key_name(kek_name: str, key_prefix: str = "rempart-") -> str:
    """The Transit key name for `kek_name`: `key_prefix` + an injective escape of it.

    ASCII letters and digits are kept, and '-' too except as the last character; every
    other character (':', '/', '.', '_', spaces, non-ASCII...) becomes '_' followed by
    the two hex digits of each of its UTF-8 bytes, so ``insurer:1`` is
    ``rempart-insurer_3a1``. The escape is reversible, so two KEK names can never share
    a Vault key (destroying one can never shred the other).
    """
    if not kek_name:
        raise KeyProviderError("a KEK name cannot be empty")
    parts: list[str] = []
    last = len(kek_name) - 1
    for index, char in enumerate(kek_name):
        if char in _LITERAL or (char == "-" and index != last):
            parts.append(char)
        else:
            parts.extend(f"_{byte:02x}" for byte in char.encode("utf-8"))
    name = key_prefix + "".join(parts)
    if not _VAULT_NAME.fullmatch(name):
        raise KeyProviderError(f"KEK {kek_name!r} with prefix {key_prefix!r} gives no valid Vault key name")
    return name


class VaultTransitProvider:
    """`KeyProvider` backed by a Vault Transit mount, over Vault's HTTP API.

    The token needs, on ``<mount>/keys/<prefix>*``: create, read, update, delete; on
    ``<mount>/keys/<prefix>*/config``, ``/rotate`` and ``/trim``: update; on
    ``<mount>/encrypt/<prefix>*`` and ``<mount>/decrypt/<prefix>*``: update. Do not
    grant ``create`` on ``encrypt/``: with it, Vault creates a missing key on encrypt
    (``wrap`` checks that the key exists first, but a destroy racing a wrap could
    otherwise bring a shredded KEK name back as a fresh key). Setting
    ``disable_upsert`` on the mount (``<mount>/config/keys``) closes the same gap.
    """

    def __init__(
        self,
        addr: str,
        token: str,
        mount: str = "transit",
        *,
        key_prefix: str = "rempart-",
        timeout: float = 5.0,
        client: httpx.Client | None = None,
    ) -> None:
        mount = mount.strip("/")
        if not _MOUNT.fullmatch(mount):
            raise KeyProviderError(f"invalid Vault mount path {mount!r}")
        if not token:
            raise KeyProviderError("a Vault token is required")
        vault_key_name("x", key_prefix)  # fail now, not on first use, on a bad prefix
        self._addr = addr.rstrip("/")
        self._token = token
        self._mount = mount
        self._key_prefix = key_prefix
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout)
        self._timeout = timeout

    def __repr__(self) -> str:  # never show the token
        return f"VaultTransitProvider(addr={self._addr!r}, mount={self._mount!r}, key_prefix={self._key_prefix!r})"

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP client if this provider created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- HTTP plumbing -------------------------------------------------------------------

    def _vault_name(self, kek_name: str) -> str:
        return vault_key_name(kek_name, self._key_prefix)

    def _request(
        self,
        method: str,
        path: str,
        *,
        op: str,
        kek_name: str,
        body: dict[str, Any] | None = None,
    ) -> httpx.Response:
        url = f"{self._addr}/v1/{self._mount}/{path}"
        try:
            return self._client.request(
                method,
                url,
                json=body,
                headers={"X-Vault-Token": self._token},
                timeout=self._timeout,
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            # `from None`: the httpx exception holds the request, headers (token) included.
            detail = self._redact(str(exc))
            raise KeyProviderError(f"Vault {op} of key {kek_name!r} failed: {type(exc).__name__}: {detail}") from None

    def _redact(self, text: str) -> str:
        text = text.replace(self._token, "<token>")
        text = _CIPHERTEXT_ANYWHERE.sub("<ciphertext>", text)
        return text[:_MAX_ERROR_CHARS]

    def _error(self, response: httpx.Response, *, op: str, kek_name: str) -> KeyProviderError:
        messages = [self._redact(m) for m in _vault_errors(response)[:3]]
        detail = f": {'; '.join(messages)}" if messages else ""
        return KeyProviderError(f"Vault {op} of key {kek_name!r} failed with HTTP {response.status_code}{detail}")

    def _data(self, response: httpx.Response, *, op: str, kek_name: str) -> dict[str, Any]:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, dict):
            raise KeyProviderError(f"Vault {op} of key {kek_name!r}: HTTP {response.status_code} without a data object")
        return data

    def _read_key(self, kek_name: str, *, op: str) -> dict[str, Any] | None:
        """The key's metadata (`data` of GET keys/<name>), or None if Vault has no such key."""
        response = self._request("GET", f"keys/{self._vault_name(kek_name)}", op=op, kek_name=kek_name)
        if response.status_code == 404:
            # A missing key is a 404 with an empty error list; any other 404 (no Transit
            # engine at this mount, a proxy's page) must not pass for a destroyed key.
            if _is_vault_error_body(response) and not _vault_errors(response):
                return None
            raise self._error(response, op=op, kek_name=kek_name)
        if response.status_code != 200:
            raise self._error(response, op=op, kek_name=kek_name)
        return self._data(response, op=op, kek_name=kek_name)

    def _require_key(self, kek_name: str, *, op: str) -> dict[str, Any]:
        info = self._read_key(kek_name, op=op)
        if info is None:
            raise KeyDestroyedError(f"key {kek_name!r} does not exist in Vault (destroyed or never created)")
        return info

    def _post(self, path: str, body: dict[str, Any], *, op: str, kek_name: str) -> httpx.Response:
        response = self._request("POST", path, op=op, kek_name=kek_name, body=body)
        if response.status_code not in (200, 204):
            raise self._error(response, op=op, kek_name=kek_name)
        return response

    # -- KeyProvider ---------------------------------------------------------------------

    def ensure_key(self, kek_name: str) -> int:
        name = self._vault_name(kek_name)
        # Idempotent in Vault: on an existing key it answers 200 with a warning.
        self._post(f"keys/{name}", {"type": KEY_TYPE}, op="create", kek_name=kek_name)
        info = self._require_key(kek_name, op="read")
        key_type = info.get("type")
        if key_type not in _AEAD_KEY_TYPES or info.get("derived"):
            raise KeyProviderError(
                f"Vault key for {kek_name!r} exists with type {key_type!r}"
                f"{' (derived)' if info.get('derived') else ''}; expected a non-derived {KEY_TYPE} key"
            )
        return _int_field(info, "latest_version", kek_name)

    def current_version(self, kek_name: str) -> int:
        return _int_field(self._require_key(kek_name, op="read"), "latest_version", kek_name)

    def wrap(self, kek_name: str, plaintext: bytes, context: bytes) -> WrappedKey:
        name = self._vault_name(kek_name)
        # Vault's encrypt would create a missing key (upsert); a destroyed KEK must stay gone.
        self._require_key(kek_name, op="read")
        body = {
            "plaintext": base64.b64encode(plaintext).decode("ascii"),
            "associated_data": base64.b64encode(context).decode("ascii"),
        }
        response = self._post(f"encrypt/{name}", body, op="encrypt", kek_name=kek_name)
        if any("associated_data" in w for w in _warnings(response)):
            # A Vault without AAD support (< 1.13) ignores the field, with a warning:
            # the context would not be bound to the wrapped key.
            raise KeyProviderError(
                f"Vault encrypt of key {kek_name!r} ignored associated_data (Vault 1.13 or later needed)"
            )
        ciphertext = self._data(response, op="encrypt", kek_name=kek_name).get("ciphertext")
        if not isinstance(ciphertext, str) or (match := _CIPHERTEXT.fullmatch(ciphertext)) is None:
            raise KeyProviderError(f"Vault encrypt of key {kek_name!r} returned no well-formed ciphertext")
        return WrappedKey(kek_name, int(match.group(1)), ciphertext.encode("ascii"))

    def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        kek_name = wrapped.kek_name
        name = self._vault_name(kek_name)
        try:
            ciphertext = wrapped.blob.decode("ascii")
        except UnicodeDecodeError:
            ciphertext = ""
        match = _CIPHERTEXT.fullmatch(ciphertext)
        if match is None or int(match.group(1)) != wrapped.kek_version:
            raise KeyProviderError(
                f"wrapped key for {kek_name!r} v{wrapped.kek_version} is not a Vault ciphertext of that version"
            )
        body = {
            "ciphertext": ciphertext,
            "associated_data": base64.b64encode(context).decode("ascii"),
        }
        response = self._request("POST", f"decrypt/{name}", op="decrypt", kek_name=kek_name, body=body)
        if response.status_code == 200:
            encoded = self._data(response, op="decrypt", kek_name=kek_name).get("plaintext")
            try:
                return base64.b64decode(encoded if isinstance(encoded, str) else "", validate=True)
            except (binascii.Error, ValueError):
                raise KeyProviderError(f"Vault decrypt of key {kek_name!r} returned no valid plaintext") from None
        if response.status_code != 400:
            raise self._error(response, op="decrypt", kek_name=kek_name)
        # 400 covers a missing key, a retired version and a failed authentication alike:
        # read the key's metadata to decide which.
        info = self._read_key(kek_name, op="read")
        if info is None:
            raise KeyDestroyedError(f"key {kek_name!r} does not exist in Vault (destroyed)")
        floor = max(
            _int_field(info, "min_decryption_version", kek_name, default=1),
            _int_field(info, "min_available_version", kek_name, default=0),
        )
        if wrapped.kek_version < floor:
            raise KeyDestroyedError(
                f"version {wrapped.kek_version} of key {kek_name!r} was retired (versions below {floor} are gone)"
            )
        if wrapped.kek_version > _int_field(info, "latest_version", kek_name):
            raise KeyProviderError(
                f"version {wrapped.kek_version} of key {kek_name!r} is newer than the key's latest version"
                " (was the key destroyed and created again?)"
            )
        raise self._error(response, op="decrypt", kek_name=kek_name)

    def rotate(self, kek_name: str) -> int:
        name = self._vault_name(kek_name)
        response = self._request("POST", f"keys/{name}/rotate", op="rotate", kek_name=kek_name, body={})
        if response.status_code not in (200, 204):
            if response.status_code == 400 and self._read_key(kek_name, op="read") is None:
                raise KeyDestroyedError(f"key {kek_name!r} does not exist in Vault (destroyed or never created)")
            raise self._error(response, op="rotate", kek_name=kek_name)
        if response.status_code == 200:
            # Recent Vault versions answer with the key's metadata, older ones with 204.
            latest = self._data(response, op="rotate", kek_name=kek_name).get("latest_version")
            if isinstance(latest, int) and not isinstance(latest, bool):
                return latest
        return self.current_version(kek_name)

    def retire_versions_below(self, kek_name: str, version: int) -> None:
        name = self._vault_name(kek_name)
        info = self._require_key(kek_name, op="read")
        latest = _int_field(info, "latest_version", kek_name)
        if version > latest:
            raise KeyProviderError(
                f"cannot retire versions below {version} of key {kek_name!r}: its current version is {latest}"
            )
        if version <= 1:
            return  # no version is older than 1
        min_decryption = _int_field(info, "min_decryption_version", kek_name, default=1)
        min_encryption = _int_field(info, "min_encryption_version", kek_name, default=0)
        min_available = _int_field(info, "min_available_version", kek_name, default=0)
        # Never lower a floor that is already higher (Vault refuses to go below a trim).
        decryption_floor = max(version, min_decryption, min_available)
        encryption_floor = max(decryption_floor, min_encryption)
        self._post(
            f"keys/{name}/config",
            {"min_decryption_version": decryption_floor, "min_encryption_version": encryption_floor},
            op="config",
            kek_name=kek_name,
        )
        # The config floor alone is reversible; trimming deletes the older versions' material.
        self._post(
            f"keys/{name}/trim",
            {"min_available_version": max(version, min_available)},
            op="trim",
            kek_name=kek_name,
        )

    def destroy(self, kek_name: str) -> None:
        name = self._vault_name(kek_name)
        if self._read_key(kek_name, op="read") is None:
            return  # already gone: destroying is idempotent
        self._post(f"keys/{name}/config", {"deletion_allowed": True}, op="config", kek_name=kek_name)
        response = self._request("DELETE", f"keys/{name}", op="delete", kek_name=kek_name)
        if response.status_code not in (200, 204):
            raise self._error(response, op="delete", kek_name=kek_name)
        if self._read_key(kek_name, op="read") is not None:
            raise KeyProviderError(f"Vault still has key {kek_name!r} after deleting it")

    def exists(self, kek_name: str) -> bool:
        return self._read_key(kek_name, op="read") is not None


def _is_vault_error_body(response: httpx.Response) -> bool:
    try:
        payload = response.json()
    except ValueError:
        return False
    return isinstance(payload, dict) and isinstance(payload.get("errors"), list)


def _warnings(response: httpx.Response) -> list[str]:
    try:
        payload = response.json()
    except ValueError:
        return []
    warnings = payload.get("warnings") if isinstance(payload, dict) else None
    if not isinstance(warnings, list):
        return []
    return [w for w in warnings if isinstance(w, str)]


def _vault_errors(response: httpx.Response) -> list[str]:
    try:
        payload = response.json()
    except ValueError:
        return []
    errors = payload.get("errors") if isinstance(payload, dict) else None
    if not isinstance(errors, list):
        return []
    return [e for e in errors if isinstance(e, str)]


def _int_field(info: dict[str, Any], field: str, kek_name: str, *, default: int | None = None) -> int:
    value = info.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise KeyProviderError(f"Vault metadata of key {kek_name!r} has no integer {field!r}")
    return value

"""A small fake of Vault's Transit secrets engine, for tests.

No Vault server can be installed here, so this is a real HTTP server on 127.0.0.1 (an
ephemeral port, a daemon thread) that answers the Transit endpoints the
`VaultTransitProvider` uses, with Vault's paths, response shapes, status codes and
rules:

* every request needs ``X-Vault-Token`` equal to the server's token, else 403
  ``{"errors": ["permission denied"]}``;
* ``GET /v1/<mount>/keys/<name>`` answers 404 ``{"errors": []}`` for a missing key;
* ``POST keys/<name>`` is idempotent (200 and a warning when the key existed);
* ``POST encrypt/<name>`` creates a missing key (Vault's upsert, as for a token with
  the ``create`` capability);
* keys are AES-256-GCM per version; ciphertexts are ``vault:v<N>:`` + base64(nonce +
  ciphertext + tag) with the request's ``associated_data`` as additional data;
* ``keys/<name>/config`` and ``keys/<name>/trim`` apply Vault's checks on
  ``min_decryption_version``, ``min_encryption_version`` and ``min_available_version``;
  trimming deletes the older versions' key material;
* ``DELETE keys/<name>`` refuses unless ``deletion_allowed`` was set;
* errors are Vault's ``{"errors": [...]}`` bodies with its status codes (400 for a bad
  request or a refused decrypt, 404 for an unknown route).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.@-]*[A-Za-z0-9_])?"  # Vault's GenericNameRegex
_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"keys/(?P<name>{_NAME})"), "key"),
    (re.compile(rf"keys/(?P<name>{_NAME})/config"), "config"),
    (re.compile(rf"keys/(?P<name>{_NAME})/rotate"), "rotate"),
    (re.compile(rf"keys/(?P<name>{_NAME})/trim"), "trim"),
    (re.compile(rf"encrypt/(?P<name>{_NAME})"), "encrypt"),
    (re.compile(rf"decrypt/(?P<name>{_NAME})"), "decrypt"),
]
_NONCE_BYTES = 12


class _RequestError(Exception):
    """Answer the request with a Vault error body."""

    def __init__(self, status: int, *messages: str) -> None:
        super().__init__(status, messages)
        self.status = status
        self.messages = list(messages)


@dataclass
class FakeTransitKey:
    name: str
    versions: dict[int, bytes] = field(default_factory=dict)  # version -> 32-byte key
    created: dict[int, int] = field(default_factory=dict)  # version -> unix time
    latest_version: int = 0
    min_decryption_version: int = 1
    min_encryption_version: int = 0
    min_available_version: int = 0
    deletion_allowed: bool = False

    def add_version(self) -> None:
        self.latest_version += 1
        self.versions[self.latest_version] = secrets.token_bytes(32)
        self.created[self.latest_version] = int(time.time())

    def describe(self) -> dict[str, Any]:
        """The `data` of a key read, as Vault's formatKeyPolicy gives it for aes256-gcm96."""
        return {
            "name": self.name,
            "type": "aes256-gcm96",
            "derived": False,
            "deletion_allowed": self.deletion_allowed,
            "exportable": False,
            "allow_plaintext_backup": False,
            "auto_rotate_period": 0,
            "imported_key": False,
            # Vault archives the versions below min_decryption_version out of this map.
            "keys": {str(v): t for v, t in sorted(self.created.items()) if v >= self.min_decryption_version},
            "latest_version": self.latest_version,
            "min_available_version": self.min_available_version,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": self.min_encryption_version,
            "supports_decryption": True,
            "supports_derivation": True,
            "supports_encryption": True,
            "supports_signing": False,
        }


@dataclass
class FakeVault:
    """The server's state; tests may inspect `keys` (under `lock`)."""

    token: str
    mount: str = "transit"
    url: str = ""
    keys: dict[str, FakeTransitKey] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) seen

    # -- dispatch ------------------------------------------------------------------------

    def handle(self, method: str, path: str, token: str | None, body: dict[str, Any]) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path))
            if token is None or not hmac.compare_digest(token.encode(), self.token.encode()):
                return 403, {"errors": ["permission denied"]}
            prefix = f"/v1/{self.mount}/"
            route = None
            match = None
            if path.startswith(prefix):
                rest = path[len(prefix) :]
                for pattern, candidate in _ROUTES:
                    match = pattern.fullmatch(rest)
                    if match:
                        route = candidate
                        break
            if route is None or match is None:
                return 404, {"errors": [f'no handler for route "{path[4:]}". route entry not found.']}
            handler = getattr(self, f"_{route}_{method.lower()}", None)
            if handler is None:
                return 405, {"errors": [f"unsupported operation {method}"]}
            try:
                result: tuple[int, Any] = handler(match.group("name"), body)
            except _RequestError as exc:
                return exc.status, {"errors": exc.messages}
            return result

    @staticmethod
    def _ok(data: dict[str, Any] | None, warnings: list[str] | None = None) -> tuple[int, Any]:
        if data is None:
            return 204, None
        return 200, {
            "request_id": str(uuid.uuid4()),
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": data,
            "wrap_info": None,
            "warnings": warnings,
            "auth": None,
        }

    def _get(self, name: str) -> FakeTransitKey | None:
        return self.keys.get(name)

    # -- keys/<name> ---------------------------------------------------------------------

    def _key_get(self, name: str, body: dict[str, Any]) -> tuple[int, Any]:
        key = self._get(name)
        if key is None:
            return 404, {"errors": []}
        return self._ok(key.describe())

    def _key_post(self, name: str, body: dict[str, Any]) -> tuple[int, Any]:
        key_type = body.get("type", "aes256-gcm96")
        if key_type != "aes256-gcm96":
            raise _RequestError(400, f"unknown key type {key_type}")
        key = self._get(name)
        if key is not None:
            return self._ok(key.describe(), [f"key {name} already existed"])
        key = FakeTransitKey(name)
        key.add_version()
        self.keys[name] = key
        return self._ok(key.describe())

    _key_put = _key_post

    def _key_delete(self, name: str, body: dict[str, Any]) -> tuple[int, Any]:
        key = self._get(name)
        if key is None:
            raise _RequestError(400, f"error deleting policy {name}: could not delete key; not found")
        if not key.deletion_allowed:
            raise _RequestError(400, f"error deleting policy {name}: deletion is not allowed for this key")
        del self.keys[name]
        return self._ok(None)

    # -- keys/<name>/config --------------------------------------------------------------

    def _config_post(self, name: str, body: dict[str, Any]) -> tuple[int, Any]:
        key = self._get(name)
        if key is None:
            raise _RequestError(400, f"no existing key named {name} could be found")
        warnings: list[str] = []
        min_dec = key.min_decryption_version
        min_enc = key.min_encryption_version
        if "min_decryption_version" in body:
            wanted = _int(body["min_decryption_version"], "min_decryption_version")
            if wanted < 0:
                raise _RequestError(400, "min decryption version cannot be negative")
            if wanted == 0:
                wanted = 1
                warnings.append("since Vault 0.3, transit key numbering starts at 1; forcing minimum to 1")
            if wanted != min_dec and wanted > key.latest_version:
                raise _RequestError(
                    400,
                    f"cannot set min decryption version of {wanted}, latest key version is {key.latest_version}",
                )
            min_dec = wanted
        if "min_encryption_version" in body:
            wanted = _int(body["min_encryption_version"], "min_encryption_version")
            if wanted < 0:
                raise _RequestError(400, "min encryption version cannot be negative")
            if wanted != min_enc and wanted > key.latest_version:
                raise _RequestError(
                    400,
                    f"cannot set min encryption version of {wanted}, latest key version is {key.latest_version}",
                )
            min_enc = wanted
        if min_enc > 0 and min_enc < min_dec:
            raise _RequestError(
                400,
                "cannot set min encryption/decryption values; min encryption version of "
                f"{min_enc} must be greater than or equal to min decryption version of {min_dec}",
            )
        if key.min_available_version > min_enc:
            raise _RequestError(400, "min encryption version should not be less than min available version")
        if key.min_available_version > min_dec:
            raise _RequestError(400, "min decryption version should not be less then min available version")
        deletion_allowed = key.deletion_allowed
        if "deletion_allowed" in body:
            deletion_allowed = _bool(body["deletion_allowed"], "deletion_allowed")
        key.min_decryption_version = min_dec
        key.min_encryption_version = min_enc
        key.deletion_allowed = deletion_allowed
        return self._ok(key.describe(), warnings or None)

    # -- keys/<name>/rotate and /trim ----------------------------------------------------

    def _rotate_post(self, name: str, body: dict[str, Any]) -> tuple[int, Any]:
        key = self._get(name)
        if key is None:
            raise _RequestError(400, "key not found")
        key.add_version()
        return self._ok(key.describe())

    def _trim_post(self, name: str, body: dict[str, Any]) -> tuple[int, Any]:
        key = self._get(name)
        if key is None:
            raise _RequestError(400, "invalid key name")
        if "min_available_version" not in body:
            raise _RequestError(400, "missing min_available_version")
        wanted = _int(body["min_available_version"], "min_available_version")
        if wanted < key.min_available_version:
            raise _RequestError(400, "minimum available version cannot be decremented")
        if key.min_encryption_version == 0:
            raise _RequestError(
                400, "minimum available version cannot be set when minimum encryption version is not set"
            )
        if key.min_decryption_version == 0:
            raise _RequestError(
                400, "minimum available version cannot be set when minimum decryption version is not set"
            )
        if wanted > key.min_encryption_version:
            raise _RequestError(400, "minimum available version cannot be greater than minmum encryption version")
        if wanted > key.min_decryption_version:
            raise _RequestError(400, "minimum available version cannot be greater than minimum decryption version")
        if wanted <= 0:
            raise _RequestError(400, "minimum available version should be positive")
        key.min_available_version = wanted
        for version in [v for v in key.versions if v < wanted]:
            del key.versions[version]  # gone for good, as in Vault
            del key.created[version]
        return self._ok(key.describe())

    # -- encrypt / decrypt ---------------------------------------------------------------

    def _encrypt_post(self, name: str, body: dict[str, Any]) -> tuple[int, Any]:
        if "plaintext" not in body:
            raise _RequestError(400, "missing plaintext to encrypt")
        plaintext = _b64(body["plaintext"])
        aad = _b64(body.get("associated_data") or "")
        key = self._get(name)
        warnings = None
        if key is None:  # upsert, as Vault does for a token allowed to create
            key = FakeTransitKey(name)
            key.add_version()
            self.keys[name] = key
        version = _int(body.get("key_version", 0), "key_version")
        if version == 0:
            version = key.latest_version
        elif version < key.min_encryption_version:
            raise _RequestError(400, "requested version for encryption is less than the minimum encryption key version")
        elif version > key.latest_version:
            raise _RequestError(400, "requested version for encryption is higher than the latest key version")
        material = key.versions.get(version)
        if material is None:
            raise _RequestError(400, "requested version for encryption has been trimmed")
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = AESGCM(material).encrypt(nonce, plaintext, aad or None)
        ciphertext = f"vault:v{version}:" + base64.b64encode(nonce + sealed).decode("ascii")
        return self._ok({"ciphertext": ciphertext, "key_version": version}, warnings)

    def _decrypt_post(self, name: str, body: dict[str, Any]) -> tuple[int, Any]:
        ciphertext = body.get("ciphertext")
        if not isinstance(ciphertext, str) or not ciphertext:
            raise _RequestError(400, "missing ciphertext to decrypt")
        aad = _b64(body.get("associated_data") or "")
        key = self._get(name)
        if key is None:
            raise _RequestError(400, "encryption key not found")
        if not ciphertext.startswith("vault:v"):
            raise _RequestError(400, "invalid ciphertext: no prefix")
        version_text, sep, payload = ciphertext[len("vault:v") :].partition(":")
        if not sep:
            raise _RequestError(400, "invalid ciphertext: wrong number of fields")
        try:
            version = int(version_text)
        except ValueError:
            raise _RequestError(400, "invalid ciphertext: version number could not be decoded") from None
        if version > key.latest_version:
            raise _RequestError(400, "invalid ciphertext: version is too new")
        if version < key.min_decryption_version:
            raise _RequestError(400, "ciphertext or signature version is disallowed by policy (too old)")
        material = key.versions.get(version)
        if material is None:
            raise _RequestError(400, "ciphertext or signature version is disallowed by policy (too old)")
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise _RequestError(400, "invalid ciphertext: could not decode base64") from None
        if len(raw) < _NONCE_BYTES + 16:
            raise _RequestError(400, "invalid ciphertext: unable to decrypt")
        try:
            plaintext = AESGCM(material).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], aad or None)
        except InvalidTag:
            raise _RequestError(400, "cipher: message authentication failed") from None
        return self._ok({"plaintext": base64.b64encode(plaintext).decode("ascii")})


def _int(value: Any, name: str) -> int:
    # Vault's TypeInt takes JSON numbers and numeric strings.
    if isinstance(value, bool):
        raise _RequestError(400, f"error converting input {value} for field {name!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise _RequestError(400, f"error converting input {value!r} for field {name!r}")


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise _RequestError(400, f"error converting input {value!r} for field {name!r}")


def _b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise _RequestError(400, "expected a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _RequestError(400, "illegal base64 data") from None


def _make_handler(vault: FakeVault) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeVault/0"
        disable_nagle_algorithm = True  # headers and body go out in two writes

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                body = None
            if not isinstance(body, dict):
                status, payload = 400, {"errors": ["failed to parse JSON input"]}
            else:
                path = self.path.split("?", 1)[0]
                status, payload = vault.handle(self.command, path, self.headers.get("X-Vault-Token"), body)
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            if payload is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve
        do_PUT = _serve
        do_DELETE = _serve

    return Handler


@contextmanager
def fake_vault_server(token: str, mount: str = "transit") -> Iterator[FakeVault]:
    """Run the fake on 127.0.0.1 (ephemeral port); yields its state, `url` set."""
    vault = FakeVault(token=token, mount=mount)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(vault))
    server.daemon_threads = True
    host, port = server.server_address[:2]
    vault.url = f"http://{host!s}:{port}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-vault", daemon=True
    )
    thread.start()
    try:
        yield vault
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def run_fake_vault(token: str) -> Iterator[str]:
    """Run the fake Vault on 127.0.0.1; yields its base URL (``http://127.0.0.1:<port>``)."""
    with fake_vault_server(token) as vault:
        yield vault.url

"""VaultTransitProvider against the fake Transit server in tests/fake_vault.py.

Error contract checked here: an unwrap with the wrong context is a plain
KeyProviderError (the key and version still exist, the blob just does not
authenticate), never KeyDestroyedError; KeyDestroyedError is kept for a destroyed key
or a retired version, where what was wrapped is gone for good.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import httpx
import pytest

from rempart.crypto.provider import KeyDestroyedError, KeyProvider, KeyProviderError, WrappedKey
from rempart.crypto.vault import VaultTransitProvider, vault_key_name

from fake_vault import FakeVault, fake_vault_server, run_fake_vault

TOKEN = "hvs.fake-root-token-3f9c2a"
DATA_KEY = bytes(range(32))
CONTEXT = b"rempart|field|insurer:7f1c"


@pytest.fixture
def vault() -> Iterator[FakeVault]:
    with fake_vault_server(TOKEN) as state:
        yield state


@pytest.fixture
def provider(vault: FakeVault) -> Iterator[VaultTransitProvider]:
    with VaultTransitProvider(vault.url, TOKEN) as p:
        yield p


def test_satisfies_the_key_provider_protocol(provider: VaultTransitProvider) -> None:
    as_port: KeyProvider = provider  # checked by mypy
    assert as_port is provider


def test_run_fake_vault_yields_a_loopback_url() -> None:
    with run_fake_vault(TOKEN) as url:
        assert url.startswith("http://127.0.0.1:")
        response = httpx.get(f"{url}/v1/transit/keys/nothing", headers={"X-Vault-Token": TOKEN})
        assert response.status_code == 404
        assert response.json() == {"errors": []}


def test_wrap_unwrap_round_trip(provider: VaultTransitProvider, vault: FakeVault) -> None:
    assert not provider.exists("insurer:1")
    assert provider.ensure_key("insurer:1") == 1
    assert provider.ensure_key("insurer:1") == 1  # idempotent
    assert provider.exists("insurer:1")
    assert provider.current_version("insurer:1") == 1

    wrapped = provider.wrap("insurer:1", DATA_KEY, CONTEXT)
    assert wrapped.kek_name == "insurer:1"
    assert wrapped.kek_version == 1
    assert wrapped.blob.startswith(b"vault:v1:")
    assert DATA_KEY not in wrapped.blob
    assert provider.unwrap(wrapped, CONTEXT) == DATA_KEY
    # Stored under the sanitised Vault name.
    assert set(vault.keys) == {"rempart-insurer_3a1"}


def test_empty_context_and_empty_plaintext(provider: VaultTransitProvider) -> None:
    provider.ensure_key("k")
    wrapped = provider.wrap("k", b"", b"")
    assert provider.unwrap(wrapped, b"") == b""
    with pytest.raises(KeyProviderError):
        provider.unwrap(wrapped, b"x")


def test_wrong_context_is_a_provider_error_not_destroyed(provider: VaultTransitProvider) -> None:
    provider.ensure_key("k")
    wrapped = provider.wrap("k", DATA_KEY, CONTEXT)
    with pytest.raises(KeyProviderError) as info:
        provider.unwrap(wrapped, CONTEXT + b"-other")
    assert not isinstance(info.value, KeyDestroyedError)
    message = str(info.value)
    assert "'k'" in message
    assert "400" in message
    assert wrapped.blob.decode() not in message
    assert TOKEN not in message


def test_tampered_blob_fails(provider: VaultTransitProvider) -> None:
    provider.ensure_key("k")
    wrapped = provider.wrap("k", DATA_KEY, CONTEXT)
    body = bytearray(wrapped.blob)
    body[-5] = ord("A") if body[-5] != ord("A") else ord("B")
    with pytest.raises(KeyProviderError) as info:
        provider.unwrap(WrappedKey("k", 1, bytes(body)), CONTEXT)
    assert not isinstance(info.value, KeyDestroyedError)
    # A blob whose version prefix disagrees with kek_version is refused before Vault is asked.
    with pytest.raises(KeyProviderError, match="not a Vault ciphertext"):
        provider.unwrap(WrappedKey("k", 2, wrapped.blob), CONTEXT)


def test_rotate(provider: VaultTransitProvider) -> None:
    provider.ensure_key("k")
    old = provider.wrap("k", DATA_KEY, CONTEXT)
    assert provider.rotate("k") == 2
    assert provider.current_version("k") == 2
    assert provider.ensure_key("k") == 2
    new = provider.wrap("k", DATA_KEY, CONTEXT)
    assert new.kek_version == 2
    assert new.blob.startswith(b"vault:v2:")
    assert provider.unwrap(old, CONTEXT) == DATA_KEY
    assert provider.unwrap(new, CONTEXT) == DATA_KEY


def test_retire_versions_below(provider: VaultTransitProvider, vault: FakeVault) -> None:
    provider.ensure_key("k")
    v1 = provider.wrap("k", DATA_KEY, CONTEXT)
    provider.rotate("k")
    v2 = provider.wrap("k", DATA_KEY, CONTEXT)
    provider.rotate("k")
    v3 = provider.wrap("k", DATA_KEY, CONTEXT)

    provider.retire_versions_below("k", 3)

    for old in (v1, v2):
        with pytest.raises(KeyDestroyedError, match="retired"):
            provider.unwrap(old, CONTEXT)
    assert provider.unwrap(v3, CONTEXT) == DATA_KEY
    assert provider.current_version("k") == 3
    assert provider.wrap("k", DATA_KEY, CONTEXT).kek_version == 3

    # The key material is gone (trimmed), and the floor cannot be lowered to bring it back.
    with vault.lock:
        key = vault.keys["rempart-k"]
        assert sorted(key.versions) == [3]
        assert key.min_available_version == 3
    response = httpx.post(
        f"{vault.url}/v1/transit/keys/rempart-k/config",
        headers={"X-Vault-Token": TOKEN},
        json={"min_decryption_version": 1, "min_encryption_version": 1},
    )
    assert response.status_code == 400
    with pytest.raises(KeyDestroyedError):
        provider.unwrap(v1, CONTEXT)

    # Rotating on and retiring again keeps working; retiring below an old floor is a no-op.
    provider.rotate("k")
    provider.retire_versions_below("k", 2)
    assert provider.unwrap(v3, CONTEXT) == DATA_KEY
    provider.retire_versions_below("k", 4)
    with pytest.raises(KeyDestroyedError):
        provider.unwrap(v3, CONTEXT)


def test_retire_cannot_reach_the_current_version(provider: VaultTransitProvider) -> None:
    provider.ensure_key("k")
    provider.retire_versions_below("k", 1)  # nothing is older than 1
    with pytest.raises(KeyProviderError, match="current version is 1"):
        provider.retire_versions_below("k", 2)
    with pytest.raises(KeyDestroyedError):
        provider.retire_versions_below("missing", 2)


def test_destroy(provider: VaultTransitProvider, vault: FakeVault) -> None:
    provider.ensure_key("insurer:9")
    wrapped = provider.wrap("insurer:9", DATA_KEY, CONTEXT)
    provider.rotate("insurer:9")

    provider.destroy("insurer:9")

    assert not provider.exists("insurer:9")
    with pytest.raises(KeyDestroyedError):
        provider.unwrap(wrapped, CONTEXT)
    with pytest.raises(KeyDestroyedError):
        provider.current_version("insurer:9")
    with pytest.raises(KeyDestroyedError):
        provider.rotate("insurer:9")
    # Vault's encrypt would create the key again (upsert): wrap must refuse instead.
    with pytest.raises(KeyDestroyedError):
        provider.wrap("insurer:9", DATA_KEY, CONTEXT)
    assert not provider.exists("insurer:9")
    with vault.lock:
        assert vault.keys == {}
    provider.destroy("insurer:9")  # idempotent


def test_delete_needs_deletion_allowed(vault: FakeVault, provider: VaultTransitProvider) -> None:
    provider.ensure_key("k")
    response = httpx.delete(f"{vault.url}/v1/transit/keys/rempart-k", headers={"X-Vault-Token": TOKEN})
    assert response.status_code == 400
    assert "deletion is not allowed" in response.json()["errors"][0]
    assert provider.exists("k")


def test_names_are_sanitised_without_collisions(provider: VaultTransitProvider) -> None:
    assert vault_key_name("insurer:abc") == "rempart-insurer_3aabc"
    assert vault_key_name("insurer-abc") == "rempart-insurer-abc"
    assert vault_key_name("a_b") == "rempart-a_5fb"
    assert vault_key_name("x-") == "rempart-x_2d"
    assert vault_key_name("é/ü") == "rempart-_c3_a9_2f_c3_bc"
    with pytest.raises(KeyProviderError):
        vault_key_name("")

    for name in ("insurer:abc", "insurer-abc", "insurer_3aabc"):
        provider.ensure_key(name)
    provider.destroy("insurer:abc")
    assert not provider.exists("insurer:abc")
    assert provider.exists("insurer-abc")
    assert provider.exists("insurer_3aabc")


def test_key_prefix_and_mount(vault: FakeVault) -> None:
    with VaultTransitProvider(vault.url, TOKEN, key_prefix="t1.") as p:
        p.ensure_key("k")
    assert "t1.k" in vault.keys
    with pytest.raises(KeyProviderError):
        VaultTransitProvider(vault.url, TOKEN, key_prefix="bad:prefix")
    # No Transit engine at that mount: a 404 with a message, not a missing key.
    with (
        VaultTransitProvider(vault.url, TOKEN, mount="transit2") as p,
        pytest.raises(KeyProviderError) as info,
    ):
        p.exists("k")
    assert not isinstance(info.value, KeyDestroyedError)
    assert "404" in str(info.value)


def test_wrong_token(vault: FakeVault, provider: VaultTransitProvider) -> None:
    provider.ensure_key("k")
    wrapped = provider.wrap("k", DATA_KEY, CONTEXT)
    bad_token = "hvs.not-the-right-token-77aa"
    with VaultTransitProvider(vault.url, bad_token) as bad:
        assert bad_token not in repr(bad)
        calls: list[Callable[[], object]] = [
            lambda: bad.exists("k"),
            lambda: bad.ensure_key("k"),
            lambda: bad.current_version("k"),
            lambda: bad.wrap("k", DATA_KEY, CONTEXT),
            lambda: bad.unwrap(wrapped, CONTEXT),
            lambda: bad.rotate("k"),
            lambda: bad.retire_versions_below("k", 1),
            lambda: bad.destroy("k"),
        ]
        for call in calls:
            with pytest.raises(KeyProviderError) as info:
                call()
            message = str(info.value)
            assert not isinstance(info.value, KeyDestroyedError)
            assert "403" in message
            assert "'k'" in message
            for secret in (bad_token, TOKEN, wrapped.blob.decode()):
                assert secret not in message
    assert provider.unwrap(wrapped, CONTEXT) == DATA_KEY


def test_unreachable_vault() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with VaultTransitProvider(f"http://127.0.0.1:{port}", TOKEN, timeout=2.0) as p:
        with pytest.raises(KeyProviderError) as info:
            p.exists("k")
        assert TOKEN not in str(info.value)
        assert info.value.__cause__ is None
        assert info.value.__suppress_context__


def test_injected_client_is_not_closed(vault: FakeVault) -> None:
    with httpx.Client() as client:
        with VaultTransitProvider(vault.url, TOKEN, client=client) as p:
            p.ensure_key("k")
        assert not client.is_closed
        with VaultTransitProvider(vault.url, TOKEN, client=client) as p:
            assert p.exists("k")


def test_vault_that_ignores_associated_data_is_refused() -> None:
    # Vault before 1.13 has no associated_data: it drops the field with a warning.
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"data": {"latest_version": 1, "type": "aes256-gcm96"}})
        return httpx.Response(
            200,
            json={
                "data": {"ciphertext": "vault:v1:AAAA"},
                "warnings": ["Endpoint ignored these unrecognized parameters: [associated_data]"],
            },
        )

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        p = VaultTransitProvider("http://vault.invalid", TOKEN, client=client)
        with pytest.raises(KeyProviderError, match="ignored associated_data"):
            p.wrap("k", DATA_KEY, CONTEXT)

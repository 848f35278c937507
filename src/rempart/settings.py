"""One typed settings object, read from `REMPART_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REMPART_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL >= 15 URL; unset means the platform starts its own server in data_dir/pg.",
    )
    data_dir: Path = Field(default=Path("var"), description="Embedded database, keyring, import reports.")

    key_provider: Literal["local", "vault"] = "local"
    keyring_path: Path | None = Field(
        default=None, description="Local keyring file (0600); default data_dir/keys/keyring.json."
    )
    vault_addr: str = "http://127.0.0.1:8200"
    vault_token: SecretStr = SecretStr("")
    vault_mount: str = "transit"

    http_host: str = "127.0.0.1"
    http_port: int = 8000

    # Passkeys: the relying party is the portal's host; assertions made for any other origin
    # (a look-alike phishing site relaying the ceremony) are refused.
    webauthn_rp_id: str = "localhost"
    webauthn_rp_name: str = "Rempart"
    public_origin: str | None = Field(
        default=None, description="The portal's origin as browsers see it; default http://localhost:<http_port>."
    )
    session_idle_minutes: int = Field(default=15, ge=1)
    session_absolute_hours: int = Field(default=12, ge=1)
    invitation_hours: int = Field(default=48, ge=1, le=168)
    # Federation with the health sector's identity provider (Pro Santé Connect or compatible).
    oidc_issuer: str | None = None
    oidc_client_id: str = "rempart"
    oidc_client_secret: SecretStr = SecretStr("")
    oidc_acr_levels: tuple[str, ...] = ("eidas1", "eidas2", "eidas3")  # accepted, weakest first
    iban_cooling_off_hours: int = Field(default=72, ge=0, description="Payments to a new IBAN wait this long.")
    audit_origin: str | None = Field(
        default=None, description="The audit log's name in its signed checkpoints (default: <portal host>/audit)."
    )
    audit_checkpoint_seconds: int = Field(default=60, ge=1, description="How often the audit tree is signed.")
    audit_sequencer: Path | None = Field(
        default=None,
        description="Unix socket of the audit sequencer process (set by `rempart serve` for its workers); "
        "unset: each process commits its own reads.",
    )
    # Outgoing e-mail (notices such as an IBAN change announced to the previous contact).
    smtp_host: str | None = Field(default=None, description="Unset: notices wait in the outbox.")
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_username: str | None = None
    smtp_password: SecretStr = SecretStr("")
    smtp_sender: str = "Rempart <ne-pas-repondre@rempart.invalid>"
    http_workers: int = Field(default=1, ge=1, le=64, description="Server processes (`rempart serve`).")
    http_threads: int = Field(
        default=8, ge=1, le=200, description="Requests one server process works on at once (its thread pool)."
    )
    bench_endpoints: bool = Field(
        default=False, description="Serve /bench/ceiling (one indexed SELECT) for bench/eligibility.py only."
    )

    import_chunk_rows: int = Field(default=5000, ge=100, le=100_000)
    import_workers: int = Field(default=0, ge=0, le=64, description="0 means one per CPU core.")
    full_import_max_closing_share: float = Field(
        default=0.10, gt=0, le=1, description="A --full feed may close at most this share without --force."
    )

    @property
    def portal_origin(self) -> str:
        return self.public_origin or f"http://localhost:{self.http_port}"

    @property
    def audit_log_origin(self) -> str:
        if self.audit_origin:
            return self.audit_origin
        host = self.portal_origin.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
        return f"{host}/audit"

    @property
    def pgdata_dir(self) -> Path:
        return self.data_dir / "pg"

    @property
    def resolved_keyring_path(self) -> Path:
        return self.keyring_path or self.data_dir / "keys" / "keyring.json"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

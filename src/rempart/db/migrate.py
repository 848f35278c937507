"""Alembic migrations, run from code so `rempart db migrate` needs no alembic.ini."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: a literal % must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def all_models() -> None:
    """Import every context's models so Base.metadata knows all tables."""
    import rempart.care.models
    import rempart.crypto.models
    import rempart.guard.models
    import rempart.identity.models
    import rempart.registry.models  # noqa: F401

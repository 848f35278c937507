from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from rempart.db.base import Base
from rempart.db.migrate import all_models

all_models()
target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url
    connectable = context.config.attributes.get("connection") or create_engine(url, poolclass=pool.NullPool)
    if hasattr(connectable, "connect"):
        with connectable.connect() as connection:
            _run(connection)
    else:
        _run(connectable)


def _modelled(obj, name, type_, reflected, compare_to) -> bool:  # type: ignore[no-untyped-def]
    """The audit schema is hand-written (partitions, generated columns): autogenerate leaves it alone."""
    return getattr(obj, "schema", None) != "audit"


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection, target_metadata=target_metadata, include_schemas=True, include_object=_modelled
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()

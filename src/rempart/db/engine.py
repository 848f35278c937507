"""SQLAlchemy engine and sessions."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, *, pool_size: int = 20) -> Engine:
    """A pool as large as the requests one server process runs at once (its threadpool is 40):
    a connection opened per request beyond the pool costs PostgreSQL a new backend each time.
    No ping before each checkout (a round trip per request): a connection the server dropped
    fails its one request and is replaced."""
    return create_engine(url, pool_size=pool_size, max_overflow=20, pool_pre_ping=False, pool_recycle=1800)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)

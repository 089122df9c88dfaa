"""Former home of the storage backends, kept so ``posthog_customerio.db`` imports keep working.

Everything lives in :mod:`posthog_customerio.storage` now.
"""

from __future__ import annotations

from .storage import PostgresStorage, SqliteStorage, Storage, open_storage
from .storage.migrations import POSTGRES_MIGRATIONS as _PG_MIGRATIONS  # noqa: F401 - tests migrate by hand
from .storage.migrations import SQLITE_MIGRATIONS as _MIGRATIONS
from .storage.postgres import key_lock_id  # noqa: F401

__all__ = ["SCHEMA_VERSION", "Database", "PostgresDatabase", "SqliteDatabase", "Storage", "open_database"]

SqliteDatabase = SqliteStorage
PostgresDatabase = PostgresStorage
#: The default backend (kept under its historical name).
Database = SqliteStorage
open_database = open_storage
SCHEMA_VERSION = len(_MIGRATIONS)

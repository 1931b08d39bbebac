"""The metadata store (SQLAlchemy Core; SQLite by default, PostgreSQL by URL).

``Store.open()`` turns a home and/or URL into a ready store; see
``store.py`` for the contract every backend honours.
"""

from selection.store.store import STORE_ENV, Store

__all__ = ["STORE_ENV", "Store"]

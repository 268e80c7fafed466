"""The run store's contract and its engines beyond the embedded SQLite one (PostgreSQL),
the factory that picks one from ``store.url``, and moving an installation between them.

Nothing is imported here: ``psycopg`` loads only when a PostgreSQL store is opened.
"""

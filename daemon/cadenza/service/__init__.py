"""The central service: access point, accounts, catalog, storage, tracker, ingest.

Each role is a module behind a narrow interface; :mod:`cadenza.service.serve` composes
them into one process (the embedded default: SQLite and files under a data directory).
"""

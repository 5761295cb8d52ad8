"""The application's database and role, created on the Patroni leader."""

from __future__ import annotations

import psycopg
from psycopg import sql

from local.wiring import APP_DB, APP_DB_USER, Wiring


def ensure_app_database(wiring: Wiring) -> None:
    """Idempotent: the role (password reset to the recorded one) and its database."""
    password = wiring.layout.secrets["app_db_password"]
    dsn = wiring.db_dsn(user="postgres", password=wiring.layout.secrets["postgres_password"], dbname="postgres")
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_DB_USER,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(
            sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(APP_DB_USER), sql.Literal(password))
        )
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (APP_DB,)).fetchone():
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(APP_DB), sql.Identifier(APP_DB_USER))
            )

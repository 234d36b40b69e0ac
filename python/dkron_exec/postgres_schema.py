"""The PostgreSQL store's schema, created and upgraded by the library.

Everything lives in the ``dkron_exec`` schema. ``dkron_exec.schema_migrations`` records each
migration applied (version, name, when); opening a store applies the missing ones in order, in
one transaction, under an advisory lock so that stores opened at once on many hosts do not race.
A database already at a newer version than this library knows is refused: an older library must
not write rows a newer one reads differently.
"""

from __future__ import annotations

from typing import Any

import psycopg

from .errors import StoreError

# Namespaces of advisory-lock keys (64-bit), so ours never meet another application's.
MIGRATION_LOCK = 0x646B726F6E5F6D67  # "dkron_mg"

# (version, name, SQL). Append only: an applied migration never changes.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "executions table",
        """
        CREATE TABLE dkron_exec.executions (
            job_name text NOT NULL,
            key text NOT NULL,
            started_ns bigint NOT NULL,
            finished_ns bigint,
            success boolean NOT NULL,
            exit_code bigint,
            error text,
            node_name text NOT NULL,
            grp bigint NOT NULL,
            attempt bigint NOT NULL,
            output bytea NOT NULL,
            output_truncated boolean NOT NULL,
            output_size bigint NOT NULL,
            processor_errors text[] NOT NULL,
            cpu_time_us bigint,
            peak_memory bigint,
            PRIMARY KEY (job_name, key)
        );
        CREATE INDEX executions_by_start ON dkron_exec.executions (job_name, started_ns DESC);
        """,
    ),
)

LATEST = MIGRATIONS[-1][0]


def migrate(conn: psycopg.Connection[Any], location: str) -> int:
    """Brings the database to ``LATEST``; returns the version it was at."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE SCHEMA IF NOT EXISTS dkron_exec")
        conn.execute(
            """CREATE TABLE IF NOT EXISTS dkron_exec.schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        row = conn.execute("SELECT coalesce(max(version), 0) FROM dkron_exec.schema_migrations").fetchone()
        current = int(row[0]) if row else 0
        if current > LATEST:
            raise StoreError(
                f"cannot use the store {location}: its schema is at version {current}, newer than "
                f"this dkron_exec knows ({LATEST}); upgrade dkron_exec"
            )
        for version, name, sql in MIGRATIONS:
            if version > current:
                conn.execute(sql)
                conn.execute(
                    "INSERT INTO dkron_exec.schema_migrations (version, name) VALUES (%s, %s)",
                    (version, name),
                )
    return current

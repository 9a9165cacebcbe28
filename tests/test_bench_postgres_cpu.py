"""bench/replicas.py's Postgres CPU figure counts the backends that have exited between two
readings (it used to sum only the live ones: negative CPU per request after a replica was
killed, and a FileNotFoundError reading the backend it had just closed)."""

from __future__ import annotations

import psycopg

from bench.replicas import cpu_seconds, postgres_cpu, postmaster_of


def test_the_cpu_of_closed_connections_stays_counted(pg_url: str) -> None:
    postmaster = postmaster_of(pg_url)
    first = postgres_cpu(postmaster)
    spent = 0.0
    for _ in range(3):
        with psycopg.connect(pg_url) as con:
            con.execute("SELECT count(*) FROM generate_series(1, 3000000)").fetchone()
            row = con.execute("SELECT pg_backend_pid()").fetchone()
            assert row is not None
            spent += cpu_seconds([row[0]])
    assert spent > 0.1  # the backends did work, and are gone now
    grown = postgres_cpu(postmaster) - first
    assert grown >= spent - 0.05, (grown, spent)  # a tick of rounding per backend at most
    assert postgres_cpu(postmaster) >= first + grown  # it only grows

"""Is the role `tuneloop sql` runs as on Postgres safe to hand to a reviewer token?

A READ ONLY transaction stops writes to tables, not what a superuser or a role with
REPLICATION or the file-reading predefined roles may do in it: read the server's files
(`pg_read_file`), create a replication slot that outlives the rollback (WAL piles up until
the disk fills), switch WAL, reset statistics, end other roles' sessions. The name check of
storage/sql_check_pg.py refuses the functions it knows; this is the wall behind it: `serve`
refuses POST /admin/sql on such a role (proxy/admin/sql.py) and warns at start.
"""

from __future__ import annotations

from storage.db import Connection

# predefined roles whose rights a read-only transaction does not take away
POWERFUL_ROLES = ("pg_read_server_files", "pg_write_server_files",
                  "pg_execute_server_program", "pg_signal_backend")


def powerful_rights(con: Connection) -> tuple[str, list[str]]:
    """The current role's name and what it holds beyond reading: `superuser`, `replication`,
    and membership in POWERFUL_ROLES (a superuser holds them all: named once)."""
    row = con.execute(
        "SELECT r.rolname, r.rolsuper, r.rolreplication, ARRAY(SELECT g.rolname FROM pg_roles g "
        "WHERE g.rolname = ANY(?) AND pg_has_role(r.oid, g.oid, 'USAGE') ORDER BY g.rolname) "
        "FROM pg_roles r WHERE r.rolname = current_user", [list(POWERFUL_ROLES)]).fetchone()
    if row is None:
        return "", []
    name, superuser, replication, members = row
    if superuser:
        return str(name), ["superuser"]
    rights = ["replication"] if replication else []
    return str(name), rights + [str(member) for member in members or []]


def sql_role_problem(con: Connection) -> str | None:
    """Why read-only queries must not run on this connection's role, or None."""
    name, rights = powerful_rights(con)
    if not rights:
        return None
    return (f"the role {name!r} that read-only queries run as holds {', '.join(rights)}: a "
            "read-only transaction does not stop it from reading the server's files, creating "
            "replication slots that outlive the query or ending sessions. Set TUNELOOP_SQL_DB "
            "(the sql_db setting) to the URL of a role that may only read (README, "
            "\"tuneloop sql\" on Postgres)")

"""What a read-only query may not call on Postgres, whatever role it runs as.

Postgres itself refuses writes in the READ ONLY transaction `tuneloop sql` runs in (and, with
the `sql_db` setting, the role's missing rights refuse them again). A read-only transaction
still lets the store's own role signal its other sessions (`pg_terminate_backend` on every
replica's connections), take the advisory locks every replica's writes wait on, and run SQL
text built at run time (`query_to_xml('...')`, `ts_stat`); and it lets a role with more
rights (a superuser, REPLICATION, pg_read_server_files: `serve` refuses /admin/sql for those,
storage/sql_role.py) read the server's files, create a replication slot that outlives the
rollback (WAL then piles up until the disk fills), switch WAL or reset statistics. So these
names are refused before the query reaches the database, wherever they appear, as are
Unicode-escaped names (`U&"..."`) that could spell them in disguise. So are the tables no
reviewer may read (`storage.sql_check.HIDDEN_TABLES`), the planner's column samples
(`pg_stats`), and the functions that read a table named at run time (`table_to_xml`). The
check is a name match over the text: a string that merely contains such a name is refused too.
"""

from __future__ import annotations

import re

from storage.sql_check import HIDDEN_TABLES
from tuneloop.errors import Forbidden

# signalling or ending sessions (other replicas' connections share the store's role)
_SIGNALS = ("pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf",
            "pg_rotate_logfile", "pg_log_backend_memory_contexts")
# the advisory locks the store's writes and migrations take (held for a query's whole run
# they would pause every replica's writes); any prefix: pg_advisory_lock, pg_try_advisory_...
_LOCKS = r"pg_(?:try_)?advisory_\w*"
# functions that run SQL given as text (a way around any name check)
_DYNAMIC = ("query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema",
            "cursor_to_xml", "cursor_to_xmlschema", "ts_stat", "ts_rewrite", r"dblink\w*",
            r"table_to_xml\w*", r"schema_to_xml\w*", r"database_to_xml\w*")
# replication slots and origins (a slot survives the rollback and holds WAL for good), WAL
# switches, backups, recovery control
_REPLICATION = (r"pg_(?:create|drop|copy)_\w*slot", r"pg_replication_slot_\w+",
                r"pg_logical_\w+", r"pg_replication_origin_\w+", r"pg_switch_\w+",
                r"pg_create_restore_point", r"pg_(?:start_|stop_)?backup\w*",
                r"pg_wal_replay_\w+", "pg_promote", "pg_import_system_collations")
# the server's files, large objects (lo_import/lo_export read and write them), statistics
_SERVER = (r"pg_read_\w*file", r"pg_ls_\w+", "pg_stat_file", r"pg_file_\w+", "pg_logdir_ls",
           "pg_current_logfile", r"pg_stat_\w*reset\w*", r"lo_\w+", "loread", "lowrite")
# catalogs with secrets (password hashes, foreign servers' passwords, server config)
_SECRETS = ("pg_authid", "pg_shadow", "pg_user_mappings?", "pg_hba_file_rules",
            "pg_ident_file_mappings", "pg_file_settings", "pg_largeobject",
            # the planner's samples of every column (a hidden table's values among them)
            r"pg_stats\w*", r"pg_statistic\w*")
_REFUSED = re.compile(r"(?<![\w$])\"?(" + "|".join((*_SIGNALS, *_DYNAMIC, _LOCKS, *_REPLICATION,
                                                     *_SERVER, *_SECRETS, *HIDDEN_TABLES))
                      + r")\"?(?![\w$])", re.IGNORECASE)
_UNICODE_ESCAPE = re.compile(r"\bU&['\"]", re.IGNORECASE)


def check_pg_query(sql: str) -> None:
    """Forbidden (403 `read_only`) when the query names a refused function."""
    found = _REFUSED.search(sql)
    if found is not None:
        raise Forbidden(f"{found.group(1).lower()} is not allowed in a read-only query (it "
                        "signals sessions, takes the store's locks, runs SQL built from text, "
                        "reaches the server's files, WAL or replication, or reads secrets "
                        "or a hidden table)",
                        code="read_only")
    if _UNICODE_ESCAPE.search(sql):
        raise Forbidden("Unicode-escaped names and strings (U&'...') are not allowed in a "
                        "read-only query", code="read_only")

#!/bin/sh
# The roles of tuneloop's shared store (docker compose --profile replicas; README "Postgres").
# The postgres image runs this once, when it initialises an empty data volume, as its
# superuser (POSTGRES_USER, here `postgres`). It creates:
# - `tuneloop`: the replicas' role. A plain LOGIN role that owns the database (so it creates
#   and migrates the tables and the trusted extension pg_trgm), NOT a superuser: a superuser
#   can read the server's files and create replication slots inside `tuneloop sql`'s
#   read-only transaction, and `tuneloop serve` refuses /admin/sql for one.
# - `tuneloop_sql`: the role `tuneloop sql` (POST /admin/sql) runs as (TUNELOOP_SQL_DB): it
#   may read the tables `tuneloop` creates, nothing else, so the database itself refuses any
#   write. Its sorts and hashes spill to disk past work_mem (4MB, whatever the server's), and
#   its temporary files stop at 1GB (temp_file_limit: only a superuser may raise it), so a
#   reviewer's query can't fill the disk the store writes to. It shares the replicas' password
#   (TUNELOOP_PG_PASSWORD; libpq reads PGPASSWORD for both URLs): whoever holds it can log
#   in as `tuneloop` anyway, which can do more.
# The role names can be changed with TUNELOOP_PG_ROLE / TUNELOOP_PG_SQL_ROLE (tests do).
# A volume initialised before this script existed keeps its roles: run the statements below
# by hand (README, "Postgres").
set -eu
: "${TUNELOOP_PG_PASSWORD:?set TUNELOOP_PG_PASSWORD (the replicas log in with it)}"
psql --no-psqlrc -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" \
     --dbname "${POSTGRES_DB:-tuneloop}" \
     -v owner="${TUNELOOP_PG_ROLE:-tuneloop}" -v reader="${TUNELOOP_PG_SQL_ROLE:-tuneloop_sql}" \
     -v password="$TUNELOOP_PG_PASSWORD" -v db="${POSTGRES_DB:-tuneloop}" <<'SQL'
CREATE ROLE :"owner" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'password';
ALTER DATABASE :"db" OWNER TO :"owner";
ALTER SCHEMA public OWNER TO :"owner";
CREATE ROLE :"reader" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'password';
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO :"owner", :"reader";
GRANT USAGE ON SCHEMA public TO :"reader";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"reader";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO :"reader";
ALTER ROLE :"reader" SET work_mem = '4MB';
ALTER ROLE :"reader" SET temp_file_limit = '1GB';
SQL

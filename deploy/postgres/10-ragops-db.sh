#!/usr/bin/env bash
# The ragops state store's own database: database `ragops`, owned by role `ragops` (password
# RAGOPS_DB_PASSWORD), beside Airflow's metadata database (POSTGRES_DB, owned by POSTGRES_USER).
# ragops never writes Airflow's tables and Airflow never writes ragops': two databases, two roles.
#
# docker-compose.yaml mounts this file into /docker-entrypoint-initdb.d/, so the postgres image runs
# it once, when it initialises an empty data volume. It is idempotent: on a volume that already
# exists (created before this script, or to apply a changed RAGOPS_DB_PASSWORD) run it again with
#   docker compose exec postgres bash /docker-entrypoint-initdb.d/10-ragops-db.sh
# The tables themselves are created by `ragops db upgrade` (Alembic) in the airflow-init service.
set -euo pipefail

: "${RAGOPS_DB_PASSWORD:?RAGOPS_DB_PASSWORD is not set: the ragops role needs a password (see .env.example)}"
: "${POSTGRES_USER:?POSTGRES_USER is not set}"
ragops_db=ragops        # RAGOPS_STATE_DB_URL in docker-compose.yaml names this database ...
ragops_user=ragops      # ... and this role
airflow_db="${POSTGRES_DB:-$POSTGRES_USER}"

# psql variables (-v) are quoted by psql itself (:'var' = literal, :"var" = identifier), so a
# password with quotes or backslashes cannot break the statements. \gexec runs each generated
# statement; CREATE DATABASE cannot run inside a DO block or a transaction.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$airflow_db" \
  -v ragops_db="$ragops_db" -v ragops_user="$ragops_user" -v ragops_password="$RAGOPS_DB_PASSWORD" \
  -v airflow_db="$airflow_db" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'ragops_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'ragops_user')
\gexec
-- every run sets the password, so a changed RAGOPS_DB_PASSWORD is applied by running this again
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'ragops_user', :'ragops_password')
\gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'ragops_db', :'ragops_user')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'ragops_db')
\gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'ragops_db', :'ragops_user')
\gexec
-- only the owner (and superusers) may connect to either database
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'ragops_db')
\gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'airflow_db')
\gexec
SQL
echo "ragops state database '$ragops_db' (owner '$ragops_user') ready"

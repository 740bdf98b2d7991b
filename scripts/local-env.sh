# The environment of a local, single-user installation (`make up`, scripts/manage.sh).
# Sourced from the repository root; each setting can be overridden from outside.
# shellcheck shell=bash
REPO_ROOT=$(pwd)
STATE=${HUB_STATE_DIR:-$REPO_ROOT/.state}
mkdir -p "$STATE/logs"
chmod 700 "$STATE"
_py=.venv/bin/python

export DEBUG=${DEBUG:-1}
export ALLOWED_HOSTS=${ALLOWED_HOSTS:-127.0.0.1,localhost}
# A key generated once for this checkout, kept outside git; never printed.
if [ -z "${SECRET_KEY:-}" ] && [ -z "${SECRET_KEY_FILE:-}" ]; then
  [ -s "$STATE/secret_key" ] || (umask 077 && $_py -c 'import secrets; print(secrets.token_urlsafe(50))' > "$STATE/secret_key")
  export SECRET_KEY_FILE="$STATE/secret_key"
fi
# Demo passwords, generated once and kept with the other local state.
for who in ADMIN RESEARCHER; do
  var="DEMO_${who}_PASSWORD"
  file="$STATE/demo_${who,,}_password"
  if [ -z "${!var:-}" ]; then
    [ -s "$file" ] || (umask 077 && $_py -c 'import secrets; print(secrets.token_urlsafe(12))' > "$file")
    export "$var=$(cat "$file")"
  fi
done
# The database: the local PostgreSQL (Debian's, started by `make up` through
# scripts/services.sh, database hubondemand_local over its Unix socket), which takes the quick
# start's concurrent writers; DATABASE_URL=sqlite:///db.sqlite3 keeps a single SQLite file.
if [ -z "${DATABASE_URL:-}" ]; then
  export DATABASE_URL="postgres://%2Fvar%2Frun%2Fpostgresql/hubondemand_local"
  export QUICKSTART_POSTGRES=hubondemand_local
fi
# KUBECONFIG stays as it is: unset, the portal uses .devcluster/kubeconfig (portal/settings.py).
# Metrics and heartbeats of the local processes stay on this machine and in its state folder.
export METRICS_LISTEN_ADDRESS=${METRICS_LISTEN_ADDRESS:-127.0.0.1}
export HEALTH_HEARTBEAT_DIR=${HEALTH_HEARTBEAT_DIR:-$STATE/health}

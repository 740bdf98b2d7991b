#!/usr/bin/env bash
# Start (or stop) the local PostgreSQL and Redis that tests and `make up` use.
#   scripts/services.sh start redis|postgres ...   idempotent; prints nothing secret
#   scripts/services.sh stop  redis|postgres ...
# Both listen on 127.0.0.1 only. PostgreSQL is Debian's, run through pg_ctlcluster.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${HUB_STATE_DIR:-$REPO_ROOT/.state}
REDIS_PORT=${REDIS_PORT:-6379}
PG_DB=${PG_DB:-hubondemand}
# The database role is the login user, authenticated by PostgreSQL over its Unix socket
# (peer authentication): no password exists to leak.
PG_USER=${PG_USER:-$(id -un)}

die() { echo "services: $*" >&2; exit 1; }

pg_version() {
  ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1
}

start_redis() {
  command -v redis-server >/dev/null || die "redis-server is not installed (apt-get install redis-server)"
  if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    echo "services: redis already answers on 127.0.0.1:$REDIS_PORT"
    return
  fi
  mkdir -p "$STATE/redis"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes \
    --dir "$STATE/redis" --save "" --appendonly no \
    --pidfile "$STATE/redis/redis.pid" --logfile "$STATE/redis/redis.log"
  for _ in $(seq 1 50); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && { echo "services: redis on 127.0.0.1:$REDIS_PORT"; return; }
    sleep 0.1
  done
  tail -n 20 "$STATE/redis/redis.log" >&2 || true
  die "redis did not start"
}

stop_redis() {
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
}

start_postgres() {
  local version
  version=$(pg_version)
  [ -n "$version" ] || die "PostgreSQL is not installed (apt-get install postgresql)"
  if ! pg_lsclusters -h "$version" main >/dev/null 2>&1 || [ -z "$(pg_lsclusters -h "$version" main 2>/dev/null)" ]; then
    pg_createcluster "$version" main >/dev/null
  fi
  pg_ctlcluster "$version" main start >/dev/null 2>&1 || pg_ctlcluster "$version" main status >/dev/null 2>&1 ||
    die "PostgreSQL $version did not start; see /var/log/postgresql/"
  # A role that may create the test databases.
  su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'\"" | grep -q 1 ||
    su postgres -c "psql -qc 'CREATE ROLE \"$PG_USER\" LOGIN CREATEDB'"
  su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='$PG_DB'\"" | grep -q 1 ||
    su postgres -c "createdb -O $PG_USER $PG_DB"
  echo "services: postgresql $version on /var/run/postgresql (database $PG_DB, role $PG_USER)"
}

stop_postgres() {
  local version
  version=$(pg_version)
  [ -n "$version" ] && pg_ctlcluster "$version" main stop 2>/dev/null || true
}

action=${1:-}
shift || true
[ $# -gt 0 ] || set -- redis postgres
for service in "$@"; do
  case "$action:$service" in
    start:redis) start_redis ;;
    stop:redis) stop_redis ;;
    start:postgres) start_postgres ;;
    stop:postgres) stop_postgres ;;
    *) die "usage: $0 start|stop [redis] [postgres]" ;;
  esac
done

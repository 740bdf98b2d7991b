#!/usr/bin/env bash
# The quick start (`make up`): Redis, database migrations, the local control plane (unless
# KUBECONFIG names a cluster), demo users, then the portal on 127.0.0.1:8000 with a Celery
# worker and beat. Ctrl-C stops everything this script started; data is kept for next time
# (the PostgreSQL database, the cluster's etcd); `make cluster-down` removes the cluster's.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PORT=${PORT:-8000}

die() { echo "make up: $*" >&2; exit 1; }

# shellcheck source=local-env.sh
source scripts/local-env.sh

pids=()
started_redis=0
started_postgres=0
started_cluster=0
cleanup() {
  trap - EXIT
  echo
  echo "make up: stopping ..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ "$started_cluster" = 1 ] && bash devcluster/scripts/down.sh --keep-state
  [ "$started_redis" = 1 ] && bash scripts/services.sh stop redis
  [ "$started_postgres" = 1 ] && bash scripts/services.sh stop postgres
  echo "make up: stopped"
}
interrupted=0
trap 'interrupted=1' INT TERM
trap cleanup EXIT

if [ -z "${REDIS_URL:-}" ]; then
  command -v redis-server >/dev/null ||
    die "redis-server is needed (Debian: apt-get install redis-server), or set REDIS_URL"
  redis-cli ping >/dev/null 2>&1 || started_redis=1
  bash scripts/services.sh start redis
fi

if [ -n "${QUICKSTART_POSTGRES:-}" ]; then
  pg_isready -q -h /var/run/postgresql 2>/dev/null || started_postgres=1
  PG_DB=$QUICKSTART_POSTGRES bash scripts/services.sh start postgres
fi

$PY manage.py migrate --no-input | grep -v "^  No migrations to apply" || true

if [ -z "${KUBECONFIG:-}" ]; then
  bash devcluster/scripts/status.sh >/dev/null 2>&1 || started_cluster=1
  bash devcluster/scripts/up.sh
  export KUBECONFIG="$REPO_ROOT/.devcluster/kubeconfig"
else
  echo "make up: using the cluster in KUBECONFIG=$KUBECONFIG"
fi

# The worker's and gunicorn's processes add up their metrics in a folder each (emptied at start).
PROMETHEUS_MULTIPROC_DIR="$STATE/metrics/worker" \
  .venv/bin/celery -A portal worker --queues provisioning,celery --concurrency 2 --loglevel INFO \
  > "$STATE/logs/worker.log" 2>&1 &
pids+=($!)
.venv/bin/celery -A portal beat --loglevel INFO --schedule "$STATE/celerybeat-schedule" \
  > "$STATE/logs/beat.log" 2>&1 &
pids+=($!)
$PY manage.py watch_hubs > "$STATE/logs/watcher.log" 2>&1 &
pids+=($!)
# gunicorn, as the image serves the portal: a fixed number of workers and threads, so a burst
# of clients waits in line instead of opening a database connection each. gunicorn.conf.py adds
# the portal's log format and metrics.
PROMETHEUS_MULTIPROC_DIR="$STATE/metrics/web" \
  .venv/bin/gunicorn portal.wsgi:application --bind "127.0.0.1:$PORT" --workers 2 --threads 4 \
  --worker-tmp-dir /dev/shm --access-logfile - > "$STATE/logs/web.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 100); do
  curl -fsS -o /dev/null "http://127.0.0.1:$PORT/healthz" 2>/dev/null && break
  kill -0 "${pids[3]}" 2>/dev/null || { tail -n 20 "$STATE/logs/web.log" >&2; die "the web server did not start"; }
  sleep 0.2
done

cat <<EOT

Hub on Demand runs on http://127.0.0.1:$PORT/
$($PY manage.py seeddemo)
  REST API      http://127.0.0.1:$PORT/api/v1/   (docs: /api/docs/, schema: /api/schema/)
  API token     bash scripts/manage.sh createapitoken researcher
  Cluster       KUBECONFIG=$KUBECONFIG
  Logs          $STATE/logs/ (web, worker, beat, watcher)
  Metrics       worker http://127.0.0.1:${WORKER_METRICS_PORT:-9808}/metrics, watcher :${WATCHER_METRICS_PORT:-9809}; web /metrics with METRICS_TOKEN
Press Ctrl-C to stop.
EOT
wait -n "${pids[@]}" || true
[ "$interrupted" = 1 ] || echo "make up: a process exited; see $STATE/logs/" >&2

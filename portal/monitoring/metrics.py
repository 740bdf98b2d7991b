"""The portal's own metrics that processes record as work happens: Celery tasks, provisioning,
reconcile repairs, usage passes. They are recorded where the work runs (the worker's pool
processes, the hub watcher) and exported by that process's metrics endpoint
(portal/monitoring/exposition.py); the state of hubs, approvals, GPUs, cost and queues is read
at scrape time instead (portal/monitoring/domain.py)."""

from prometheus_client import Counter, Histogram

# Imported first: it prepares PROMETHEUS_MULTIPROC_DIR, which the metrics below write to.
from portal.monitoring import exposition  # noqa: F401

# Seconds; tasks are kept short (they schedule checks instead of waiting), a reconcile or usage
# pass over many hubs takes longer.
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
PROVISIONING_BUCKETS = (5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 450, 600, 900, 1800, 3600)
PASS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)

TASKS = Counter(
    "hubondemand_celery_tasks_total",
    "Celery task runs by task and outcome (success, failure, retry, ...).",
    ["task", "outcome"],
)
TASK_DURATION = Histogram(
    "hubondemand_celery_task_duration_seconds",
    "How long Celery task runs took, whatever their outcome.",
    ["task"],
    buckets=TASK_BUCKETS,
)
PROVISIONING_DURATION = Histogram(
    "hubondemand_provisioning_duration_seconds",
    "From a hub's approval to running (for a resumed or retried hub: from the start of its "
    "provisioning).",
    buckets=PROVISIONING_BUCKETS,
)
RECONCILE_REPAIRS = Counter(
    "hubondemand_reconcile_repairs_total",
    "What reconcile passes repaired: objects re-applied or pruned, volumes moved, hubs failed "
    "because their namespace disappeared.",
    ["action"],
)
USAGE_PASS_DURATION = Histogram(
    "hubondemand_usage_pass_duration_seconds",
    "How long usage collection passes took (reading the cluster and writing usage).",
    buckets=PASS_BUCKETS,
)

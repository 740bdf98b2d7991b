"""Operating the portal: Prometheus metrics, health and readiness probes, worker and beat
liveness, and the context (request id, user, hub, task) every log line carries."""

# The web process's endpoints for probes and scrapers (served by OperationsMiddleware, left
# out of the access log).
OPERATIONS_PATHS = ("/healthz", "/readyz", "/metrics")
# Keys of the WSGI environ through which gunicorn's access log line (gunicorn.conf.py) learns
# what the portal bound for the request (request_id, user, hub_id, route).
ENVIRON_PREFIX = "hubondemand."

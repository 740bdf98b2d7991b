"""gunicorn's settings for the portal's web process, read from the working directory (the
image's /app, the repository for `make up`); command-line options still win.

- Logs: gunicorn's own lines go through the portal's formatter (JSON lines in production, see
  portal/logconfig.py), and the access log is one structured line per request with the
  request id, user and hub the portal bound, without the probes' requests.
- Metrics: with PROMETHEUS_MULTIPROC_DIR set, the master empties it at start and marks every
  worker that exits as dead, so that /metrics adds up the live and past workers' counts.
"""

from __future__ import annotations

import structlog
from gunicorn import glogging

from portal import settings as portal_settings
from portal.monitoring import ENVIRON_PREFIX, OPERATIONS_PATHS, exposition

# The portal's logging for gunicorn's loggers too (they propagate to the root's handler).
logconfig_dict = portal_settings.LOGGING

access_log = structlog.get_logger("gunicorn.access")


class AccessLogger(glogging.Logger):
    """gunicorn's logger, with the access log as structured lines."""

    def access(self, resp, req, environ, request_time) -> None:
        if not self.cfg.accesslog or environ.get("PATH_INFO") in OPERATIONS_PATHS:
            return
        route = environ.get(ENVIRON_PREFIX + "route")
        fields = {
            "method": environ.get("REQUEST_METHOD"),
            # The route rather than the path where the portal resolved one: a path may carry
            # an invitation's token; the query string is never logged.
            "route": route,
            "path": None if route else environ.get("PATH_INFO"),
            "status": resp.status_code,
            "bytes": getattr(resp, "sent", None),
            "duration_seconds": round(request_time.total_seconds(), 6),
            "remote_addr": environ.get("REMOTE_ADDR"),
            "user_agent": (environ.get("HTTP_USER_AGENT") or "")[:200],
        }
        for key in ("request_id", "user", "hub_id"):
            if ENVIRON_PREFIX + key in environ:
                fields[key] = environ[ENVIRON_PREFIX + key]
        access_log.info("http.request", **{k: v for k, v in fields.items() if v is not None})


logger_class = AccessLogger


def on_starting(server) -> None:
    exposition.reset()


def child_exit(server, worker) -> None:
    exposition.mark_dead(worker.pid)

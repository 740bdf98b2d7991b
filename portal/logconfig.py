"""Logging of every process of the portal: structlog on top of the standard library.

One formatter renders what structlog and the standard library's loggers (Django, Celery,
gunicorn, the Kubernetes client) write: a JSON object per line in production, readable lines
in development (LOG_FORMAT json|console). Every line carries the context bound in structlog's
context variables: request_id and user for a request (portal/monitoring/middleware.py),
task_id, task and hub_id for a Celery task (portal/monitoring/receivers.py).

Django settings and gunicorn.conf.py both build their logging from here, so gunicorn's own
lines look like the portal's. Nothing here imports Django.
"""

from __future__ import annotations

import re
from typing import Any

import structlog

FORMATS = ("json", "console")
REDACTED = "[redacted]"
# Keys of a log line whose values are never written, whoever passed them.
SECRET_KEYS = re.compile(r"authorization|password|passwd|secret|token$|cookie|api_key", re.I)


def redact_secrets(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Replace the values of secret-looking keys (an Authorization header, a password)."""
    for key in event_dict:
        if SECRET_KEYS.search(key):
            event_dict[key] = REDACTED
    return event_dict


# What every line gets, from structlog and from the standard library alike.
SHARED_PROCESSORS = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso"),
    redact_secrets,
]


def configure_structlog() -> None:
    """Send structlog's lines through the standard library, to the formatter below."""
    structlog.configure(
        processors=[
            *SHARED_PROCESSORS,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def formatter(log_format: str) -> dict[str, Any]:
    """The dictConfig entry of the one formatter: JSON lines, or console lines."""
    if log_format not in FORMATS:
        raise ValueError(f"LOG_FORMAT={log_format!r} must be one of {', '.join(FORMATS)}")
    renderer = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return {
        "()": structlog.stdlib.ProcessorFormatter,
        "processors": [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # A stack trace as a field of the JSON line, not as lines of its own.
            *([structlog.processors.format_exc_info] if log_format == "json" else []),
            renderer,
        ],
        "foreign_pre_chain": SHARED_PROCESSORS,
    }


def logging_config(level: str, log_format: str) -> dict[str, Any]:
    """The standard library's logging configuration: one handler on stderr for everything."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structlog": formatter(log_format)},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structlog"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # gunicorn gives its loggers handlers of their own; these send them to the root's.
            "gunicorn.error": {"handlers": [], "propagate": True},
            "gunicorn.access": {"handlers": [], "propagate": True},
        },
    }

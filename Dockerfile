# Hub on Demand: one image for the portal (gunicorn), the Celery worker and Celery beat;
# docker-compose.yml chooses the command. Build with `docker build -t hub-on-demand .`.

# pyproject.toml accepts Python 3.11 only. Pin the digest too (python:3.11-slim@sha256:...)
# where builds must be reproducible.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WEB_CONCURRENCY=2 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/hub-on-demand-metrics

# A numeric, unprivileged user, so that Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 portal \
    && useradd --system --uid 10001 --gid portal --create-home --shell /usr/sbin/nologin portal

WORKDIR /app

# Dependencies first: this layer is rebuilt only when pyproject.toml (or README.md, which the
# package metadata names) changes. The project installs no packages of its own
# ([tool.setuptools] packages = []); the code below runs from /app.
COPY pyproject.toml README.md ./
RUN pip install --no-cache-dir . && rm -rf build ./*.egg-info

COPY manage.py gunicorn.conf.py ./
COPY portal ./portal
COPY provisioning ./provisioning
COPY templates ./templates
COPY static ./static

# The settings refuse to load without a secret key; this one exists only for this command and
# is in no layer's environment. The running containers get theirs from SECRET_KEY_FILE.
RUN SECRET_KEY=build-only-collectstatic python manage.py collectstatic --noinput

USER 10001:10001

EXPOSE 8000

# /healthz: gunicorn and Django answer, whatever the Host header, without the database. The
# worker, beat and watcher containers override it with `manage.py healthcheck worker|beat|watcher`.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import http.client, sys; c = http.client.HTTPConnection('127.0.0.1', 8000, timeout=4); c.request('GET', '/healthz'); sys.exit(c.getresponse().status != 200)"]

# Workers come from WEB_CONCURRENCY (read by gunicorn), the rest from gunicorn.conf.py (JSON
# logs, metrics gathered across workers in PROMETHEUS_MULTIPROC_DIR); /dev/shm keeps worker
# heartbeats off the container's overlay filesystem.
CMD ["gunicorn", "portal.wsgi:application", "--bind", "0.0.0.0:8000", "--worker-tmp-dir", "/dev/shm", "--access-logfile", "-"]

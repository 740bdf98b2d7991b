"""Settings for Hub on Demand, all driven by environment variables.

Every variable may also be given as a file: ``SECRET_KEY_FILE=/run/secrets/key`` reads the value
from that file (for Docker and Kubernetes secrets). Required values that are missing fail loudly
with ImproperlyConfigured instead of falling back to something unsafe.
"""

import ipaddress
import json
import os
import re
import tempfile
import warnings
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from portal import logconfig

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _env(name: str) -> str | None:
    """Return the raw value of NAME, else the contents of the file named by NAME_FILE, else None."""
    if name in os.environ:
        return os.environ[name]
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path} cannot be read: {exc}") from exc
    return None


def env_str(name: str, default: str = "") -> str:
    """Return a string setting."""
    value = _env(name)
    return default if value is None else value


def env_bool(name: str, default: bool = False) -> bool:
    """Return a boolean setting; accepts 1/0, true/false, yes/no, on/off."""
    value = _env(name)
    if value is None:
        return default
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use true or false)")


def env_int(name: str, default: int) -> int:
    """Return an integer setting."""
    value = _env(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from exc


def env_list(name: str, default: str = "") -> list[str]:
    """Return a comma-separated list setting."""
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_secret(name: str, *, required: bool = True) -> str:
    """Return a secret, best given as NAME_FILE; fail loudly when required and missing."""
    value = _env(name)
    if not value and required:
        raise ImproperlyConfigured(f"Set {name} (or {name}_FILE) in the environment.")
    return value or ""


DEBUG = env_bool("DEBUG", False)

if DEBUG:
    SECRET_KEY = env_secret("SECRET_KEY", required=False) or "django-insecure-dev-only-key"
else:
    # Without DEBUG we refuse to start on a guessable key.
    SECRET_KEY = env_secret("SECRET_KEY")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "social_django",
    "django_prometheus",
    "portal.accounts",
    "portal.hubs",
    "portal.notifications",
    "portal.audit",
    "portal.usage",
    "portal.monitoring",
]

MIDDLEWARE = [
    # /healthz, /readyz and /metrics, before host checks, HTTPS redirects and everything else.
    "portal.monitoring.middleware.OperationsMiddleware",
    # The request id (X-Request-ID), user and hub on every log line of a request.
    "portal.monitoring.middleware.RequestContextMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "portal.audit.middleware.AuditContextMiddleware",
    "portal.ratelimit.LoginRateLimitMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite is only the zero-configuration quick-start default; CI and compose use PostgreSQL.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        # Each gunicorn thread and Celery worker keeps its connection for a minute rather than
        # opening one per request (a PostgreSQL connection costs several milliseconds), and
        # checks it before reuse, so a restarted database costs one failed ping, not a 500.
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The quick start's web server, worker and beat write at once: write-ahead logging lets
    # readers go on while one writes, writers wait for the lock (up to 20 s) instead of failing
    # with "database is locked", and transactions take the write lock when they begin, so a
    # transaction that read cannot fail when it later writes.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database that does not answer must not hold a request (or a readiness probe) for the
    # operating system's TCP timeout of minutes.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5)
    )
# The same engines, counting queries, errors and connections for /metrics (django-prometheus).
_COUNTED_ENGINES = {
    "django.db.backends.postgresql": "django_prometheus.db.backends.postgresql",
    "django.db.backends.sqlite3": "django_prometheus.db.backends.sqlite3",
}
DATABASES["default"]["ENGINE"] = _COUNTED_ENGINES.get(
    DATABASES["default"]["ENGINE"], DATABASES["default"]["ENGINE"]
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "hubs:list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve static files straight from the source folders too, so the quick start needs no
# collectstatic; images built for production still run collectstatic.
WHITENOISE_USE_FINDERS = True
# ...so a missing STATIC_ROOT (no collectstatic yet) is expected, not worth a warning.
warnings.filterwarnings("ignore", message=r"No directory at: .*staticfiles")

# Requests bigger than this are refused with 400 (the API's JSON parser enforces it as well).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 256 * 1024)
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000

# --- The portal ---------------------------------------------------------------------------------

# Hubs are served at https://<slug>.<HUBS_DOMAIN>.
HUBS_DOMAIN = env_str("HUBS_DOMAIN", "hubs.localhost")
# Where the portal reaches a hub's REST API ({host}, {namespace} filled in): through the hub's
# ingress by default, as a browser does. HUB_API_CA_BUNDLE: the CA file that signs the hubs'
# certificates, when it is not a public one.
HUB_API_URL = env_str("HUB_API_URL", "https://{host}/hub/api")
HUB_API_CA_BUNDLE = env_str("HUB_API_CA_BUNDLE")
# host:port where the portal opens its connections to hubs' APIs instead of resolving each
# hub's name (the ingress controller's in-cluster Service; the local cluster's ingress); the
# hub's name still goes in the Host header and the TLS server name, and is what is verified.
HUB_API_CONNECT_TO = env_str("HUB_API_CONNECT_TO")
if HUB_API_CONNECT_TO and not re.fullmatch(
    r"(\[[0-9a-fA-F:]+\]|[^\s:/\[\]]+):\d{1,5}", HUB_API_CONNECT_TO
):
    raise ImproperlyConfigured(f"HUB_API_CONNECT_TO={HUB_API_CONNECT_TO!r} is not host:port")


def _default_kubeconfig() -> str | None:
    """KUBECONFIG, else the local control plane's kubeconfig, else None (in-cluster config)."""
    explicit = env_str("KUBECONFIG")
    if explicit:
        return explicit
    local = BASE_DIR / ".devcluster" / "kubeconfig"
    return str(local) if local.exists() else None


KUBECONFIG = _default_kubeconfig()


def _env_annotations(name: str) -> dict[str, str]:
    """A JSON object of strings, e.g. {"cert-manager.io/cluster-issuer": "letsencrypt"}."""
    raw = env_str(name, "{}") or "{}"
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ImproperlyConfigured(f"{name} must be a JSON object: {exc}") from exc
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ImproperlyConfigured(f"{name} must be a JSON object of strings")
    return value


# What provisioning renders into every hub's namespace, installation-wide.
HUB_IMAGE = env_str("HUB_IMAGE", "quay.io/jupyterhub/k8s-hub:4.3.1")
PROXY_IMAGE = env_str("PROXY_IMAGE", "quay.io/jupyterhub/configurable-http-proxy:5.0.1")
INGRESS_CLASS = env_str("INGRESS_CLASS", "")
INGRESS_ANNOTATIONS = _env_annotations("INGRESS_ANNOTATIONS")
# Where every hub's pods run (hub, proxy, user servers): a node selector, e.g.
# {"hub-on-demand.dev/node": "real"} for the local cluster's real node, and the tolerations
# for that node's taints, a JSON list of objects of strings.
HUB_NODE_SELECTOR = _env_annotations("HUB_NODE_SELECTOR")


def _env_tolerations(name: str) -> tuple[dict[str, str], ...]:
    """A JSON list of Kubernetes tolerations, e.g. [{"key": "k", "operator": "Exists"}]."""
    allowed = {"key", "operator", "value", "effect"}
    try:
        value = json.loads(env_str(name, "[]") or "[]")
    except json.JSONDecodeError as exc:
        raise ImproperlyConfigured(f"{name} must be a JSON list: {exc}") from exc
    if not isinstance(value, list) or not all(
        isinstance(item, dict)
        and item
        and set(item) <= allowed
        and all(isinstance(v, str) for v in item.values())
        for item in value
    ):
        raise ImproperlyConfigured(
            f"{name} must be a JSON list of objects with string key, operator, value, effect"
        )
    return tuple(value)


HUB_TOLERATIONS = _env_tolerations("HUB_TOLERATIONS")
# Namespace of the ingress controller, the only one allowed to reach a hub's proxy.
INGRESS_NAMESPACE = env_str("INGRESS_NAMESPACE", "ingress-nginx")
# Storage class for each hub's own volumes (hub state, shared volume); empty = the default.
HUB_STORAGE_CLASS = env_str("HUB_STORAGE_CLASS", "")
# Egress of user servers and jobs: "restricted" (DNS, the hub, and the public internet outside
# private, shared, loopback and link-local ranges) or "open" for every hub; an admin may open
# it for one hub (Hub.open_egress).
HUB_EGRESS = env_str("HUB_EGRESS", "restricted")
if HUB_EGRESS not in ("open", "restricted"):
    raise ImproperlyConfigured(f"HUB_EGRESS={HUB_EGRESS!r} must be 'open' or 'restricted'")
# More addresses restricted egress never reaches (CIDRs), e.g. the API server's public one.
HUB_DENIED_EGRESS = tuple(env_list("HUB_DENIED_EGRESS"))
# The API server's addresses (CIDRs), which user servers of hubs with jobs access reach.
HUB_API_SERVER_CIDRS = tuple(env_list("HUB_API_SERVER_CIDRS"))
for _cidr in (*HUB_DENIED_EGRESS, *HUB_API_SERVER_CIDRS):
    try:
        ipaddress.ip_network(_cidr)
    except ValueError as _error:
        raise ImproperlyConfigured(f"{_cidr!r} is not an address range (CIDR): {_error}") from None
# Priority classes pods in users' namespaces may name (none by default).
HUB_PRIORITY_CLASSES = tuple(env_list("HUB_PRIORITY_CLASSES"))
# Classes that start warm: how long before a class session its room is held with placeholder
# pods, how often the portal checks, and the image placeholders run (it only sleeps).
WARM_LEAD_MINUTES = env_int("WARM_LEAD_MINUTES", 15)
WARM_INTERVAL_SECONDS = env_int("WARM_INTERVAL_SECONDS", 60)
WARM_PLACEHOLDER_IMAGE = os.environ.get("WARM_PLACEHOLDER_IMAGE", "registry.k8s.io/pause:3.10")
# Least privilege (the Helm chart sets both): the ClusterRole the portal acts with inside hub
# namespaces, bound in each of them to the portal's ServiceAccount ("namespace/name"). Unset,
# the portal's credentials must reach every namespace already (the local cluster's admin).
HUB_PORTAL_ROLE = env_str("HUB_PORTAL_ROLE", "")
HUB_PORTAL_ACCOUNT = env_str("HUB_PORTAL_ACCOUNT", "")
if bool(HUB_PORTAL_ROLE) != bool(HUB_PORTAL_ACCOUNT) or (
    HUB_PORTAL_ACCOUNT and HUB_PORTAL_ACCOUNT.count("/") != 1
):
    raise ImproperlyConfigured(
        "HUB_PORTAL_ROLE and HUB_PORTAL_ACCOUNT go together; HUB_PORTAL_ACCOUNT is the portal's "
        "ServiceAccount as namespace/name"
    )
# Ceilings on every hub's users' ResourceQuota, as a JSON object of quota resource to
# quantity; HUB_QUOTA_CAPS replaces these defaults.
DEFAULT_HUB_QUOTA_CAPS = {
    "pods": "1000",
    "count/jobs.batch": "500",
    "limits.cpu": "1024",
    "limits.memory": "4Ti",
    "requests.storage": "20Ti",
    "persistentvolumeclaims": "1000",
    "limits.ephemeral-storage": "10Ti",
}
HUB_QUOTA_CAPS = _env_annotations("HUB_QUOTA_CAPS") or DEFAULT_HUB_QUOTA_CAPS

# --- SSO: the institution's OpenID Connect issuer, for the portal and every hub ------------------

# The portal signs users in with this issuer (portal/accounts/auth.py), and every hub's
# GenericOAuthenticator is rendered with the same issuer's endpoints and username claim, so a
# user has one name everywhere. Endpoints come from the issuer's discovery document
# (<OIDC_ISSUER>/.well-known/openid-configuration) unless OIDC_*_URL set them explicitly.
OIDC_ISSUER = env_str("OIDC_ISSUER").rstrip("/")
OIDC_CLIENT_ID = env_str("OIDC_CLIENT_ID")
OIDC_CLIENT_SECRET = env_secret("OIDC_CLIENT_SECRET", required=False)
OIDC_AUTHORIZE_URL = env_str("OIDC_AUTHORIZE_URL")
OIDC_TOKEN_URL = env_str("OIDC_TOKEN_URL")
OIDC_USERINFO_URL = env_str("OIDC_USERINFO_URL")
# Each hub logs its users in as an OAuth client of the same issuer, either
# - its own client, registered by the portal at provisioning and deleted with the hub (OpenID
#   Connect dynamic client registration, RFC 7591/7592): the issuer's registration_endpoint (or
#   OIDC_REGISTRATION_URL) with OIDC_HUB_REGISTRATION_TOKEN(_FILE) as the initial access token
#   when the issuer asks for one; the client is named <prefix><slug>; or
# - one client shared by every hub, when OIDC_HUB_CLIENT_ID is set (its redirect URIs must
#   allow https://<any hub>.<HUBS_DOMAIN>/hub/oauth_callback).
OIDC_HUB_CLIENT_ID_PREFIX = env_str("OIDC_HUB_CLIENT_ID_PREFIX", "hub-")
OIDC_REGISTRATION_URL = env_str("OIDC_REGISTRATION_URL")
OIDC_HUB_REGISTRATION_TOKEN = env_secret("OIDC_HUB_REGISTRATION_TOKEN", required=False)
OIDC_HUB_CLIENT_ID = env_str("OIDC_HUB_CLIENT_ID")
OIDC_HUB_CLIENT_SECRET = env_secret("OIDC_HUB_CLIENT_SECRET", required=False)
if OIDC_HUB_CLIENT_ID and not OIDC_HUB_CLIENT_SECRET:
    raise ImproperlyConfigured("OIDC_HUB_CLIENT_ID needs OIDC_HUB_CLIENT_SECRET(_FILE).")
OIDC_SCOPES = env_list("OIDC_SCOPES", "openid,profile,email")
OIDC_USERNAME_CLAIM = env_str("OIDC_USERNAME_CLAIM", "preferred_username")
# The claim that lists a user's groups, e.g. "groups" or "eduperson_entitlement".
OIDC_GROUPS_CLAIM = env_str("OIDC_GROUPS_CLAIM", "groups")
# Members of any of these IdP groups are portal admins (and stop being admins when they leave).
OIDC_ADMIN_GROUPS = env_list("OIDC_ADMIN_GROUPS")
OIDC_DISPLAY_NAME = env_str("OIDC_DISPLAY_NAME", "Institutional sign-in")
# Rights follow the provider (portal/accounts/rights.py): every OIDC_REFRESH_INTERVAL_SECONDS
# each user's groups and admin rights are read again with their refresh token; groups and
# IdP-given admin rights the provider has not confirmed for OIDC_RIGHTS_MAX_AGE_SECONDS lapse.
OIDC_REFRESH_INTERVAL_SECONDS = env_int("OIDC_REFRESH_INTERVAL_SECONDS", 900)
OIDC_RIGHTS_MAX_AGE_SECONDS = env_int("OIDC_RIGHTS_MAX_AGE_SECONDS", 3600)
if not 60 <= OIDC_REFRESH_INTERVAL_SECONDS < OIDC_RIGHTS_MAX_AGE_SECONDS:
    raise ImproperlyConfigured(
        "OIDC_REFRESH_INTERVAL_SECONDS must be at least 60 and below OIDC_RIGHTS_MAX_AGE_SECONDS"
    )
# Signing out of the portal also ends the session at the issuer, when it offers that.
OIDC_LOGOUT_AT_IDP = env_bool("OIDC_LOGOUT_AT_IDP", True)
if OIDC_ISSUER and not (OIDC_CLIENT_ID and OIDC_CLIENT_SECRET):
    raise ImproperlyConfigured("OIDC_ISSUER needs OIDC_CLIENT_ID and OIDC_CLIENT_SECRET(_FILE).")
# Sign-in with GitHub as well, when both are set.
SOCIAL_AUTH_GITHUB_KEY = env_str("GITHUB_CLIENT_ID")
SOCIAL_AUTH_GITHUB_SECRET = env_secret("GITHUB_CLIENT_SECRET", required=False)
SOCIAL_AUTH_GITHUB_SCOPE = ["read:user", "user:email"]
# Username and password sign-in, for development and break-glass admins.
LOCAL_LOGIN_ENABLED = env_bool("LOCAL_LOGIN_ENABLED", True)

AUTHENTICATION_BACKENDS = [
    "portal.accounts.auth.LocalPasswordBackend",
    "portal.accounts.auth.OidcBackend",
    "social_core.backends.github.GithubOAuth2",
]
SOCIAL_AUTH_URL_NAMESPACE = "social"
SOCIAL_AUTH_LOGIN_REDIRECT_URL = "/hubs/"
SOCIAL_AUTH_REQUESTS_TIMEOUT = 10
SOCIAL_AUTH_PIPELINE = (
    "social_core.pipeline.social_auth.social_details",
    "social_core.pipeline.social_auth.social_names",
    "social_core.pipeline.social_auth.social_uid",
    "social_core.pipeline.social_auth.auth_allowed",
    "portal.accounts.pipeline.upgrade_legacy_uid",
    "social_core.pipeline.social_auth.social_user",
    "portal.accounts.pipeline.portal_username",
    "social_core.pipeline.user.create_user",
    "social_core.pipeline.social_auth.associate_user",
    "social_core.pipeline.social_auth.load_extra_data",
    "social_core.pipeline.user.user_details",
    "portal.accounts.pipeline.store_identity",
)

# Absolute address of the portal, for links in e-mails (sent from workers, without a request).
PORTAL_URL = env_str("PORTAL_URL", "http://127.0.0.1:8000").rstrip("/")

# Expiry: warnings this many days before a hub's end date, then suspension at the end, then
# deletion after the grace period (portal/hubs/expiry.py).
EXPIRY_WARNING_DAYS = env_str("EXPIRY_WARNING_DAYS", "14,3,1")
EXPIRY_GRACE_DAYS = env_int("EXPIRY_GRACE_DAYS", 14)
try:
    _warning_days = [int(d) for d in EXPIRY_WARNING_DAYS.split(",") if d.strip()]
except ValueError as exc:
    raise ImproperlyConfigured(
        f"EXPIRY_WARNING_DAYS={EXPIRY_WARNING_DAYS!r} must be whole days, e.g. 14,3,1"
    ) from exc
if any(days < 1 for days in _warning_days) or EXPIRY_GRACE_DAYS < 0:
    raise ImproperlyConfigured("EXPIRY_WARNING_DAYS must be >= 1 and EXPIRY_GRACE_DAYS >= 0")

# How long an e-mail invitation to a hub stays valid (portal/hubs/members.py).
HUB_INVITATION_DAYS = env_int("HUB_INVITATION_DAYS", 14)
if HUB_INVITATION_DAYS < 1:
    raise ImproperlyConfigured("HUB_INVITATION_DAYS must be >= 1")

# --- E-mail: SMTP from the environment; printed to the console in development -------------------

EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 587 if env_bool("EMAIL_USE_TLS", False) else 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD", required=False)
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("Set only one of EMAIL_USE_TLS (STARTTLS) and EMAIL_USE_SSL.")
# A slow mail server must not hold a worker or a request for long; a notice it did not take is
# sent again NOTICE_RETRY_SECONDS after the first failure, then after twice that, and so on,
# NOTICE_MAX_ATTEMPTS times in all (defaults: 5, 10, 20, 40, 80 minutes; then it is given up).
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
NOTICE_RETRY_SECONDS = env_int("NOTICE_RETRY_SECONDS", 300)
NOTICE_MAX_ATTEMPTS = env_int("NOTICE_MAX_ATTEMPTS", 6)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Hub on Demand <hubs@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG and not env_str("EMAIL_HOST")
    else "django.core.mail.backends.smtp.EmailBackend",
)

# --- Celery (read by portal/celery.py through the CELERY_ namespace) ----------------------------

# The sweeper re-queues an approved hub whose task got lost after this many seconds.
SWEEP_APPROVED_AFTER_SECONDS = env_int("SWEEP_APPROVED_AFTER_SECONDS", 180)
# Hubs stuck provisioning, updating or deprovisioning are re-queued this often, then fail.
SWEEP_MAX_REQUEUES = env_int("SWEEP_MAX_REQUEUES", 3)

# The hub watcher (`manage.py watch_hubs`, portal/hubs/watcher.py) moves hubs to running and
# deleted as the cluster reports them; off, one check task per hub polls instead.
HUB_STATUS_WATCH = env_bool("HUB_STATUS_WATCH", True)
HUB_WATCH_RESYNC_SECONDS = env_int("HUB_WATCH_RESYNC_SECONDS", 30)
# How long a hub may take to become ready, or its namespaces to go, before it fails.
HUB_READY_TIMEOUT_SECONDS = env_int("HUB_READY_TIMEOUT_SECONDS", 600)
# The Lease that lets one watcher act at a time (in the portal's namespace).
HUB_WATCH_LEASE = env_str("HUB_WATCH_LEASE", "hub-on-demand-watcher")
HUB_WATCH_LEASE_NAMESPACE = env_str("HUB_WATCH_LEASE_NAMESPACE", "default")
HUB_WATCH_LEASE_SECONDS = env_int("HUB_WATCH_LEASE_SECONDS", 15)

# --- Usage, cost and capacity (portal/usage/) ---------------------------------------------------

USAGE_COLLECT_INTERVAL_SECONDS = env_int("USAGE_COLLECT_INTERVAL_SECONDS", 300)
# A pass later than this after the previous one records a gap instead of charging across it.
USAGE_MAX_INTERVAL_SECONDS = env_int(
    "USAGE_MAX_INTERVAL_SECONDS", 2 * USAGE_COLLECT_INTERVAL_SECONDS
)
USAGE_RETENTION_DAYS = env_int("USAGE_RETENTION_DAYS", 120)
USAGE_HOURLY_RETENTION_DAYS = env_int("USAGE_HOURLY_RETENTION_DAYS", 14)
USAGE_CURRENCY = env_str("USAGE_CURRENCY", "CZK")

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = REDIS_URL
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A task a worker took but never acknowledged (the worker was killed) is delivered again after
# this many seconds. Longer than any countdown the tasks schedule (at most 120 s), so a
# scheduled check is not delivered twice while its worker still holds it.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 600)}
# The one place that says which queue a task goes to; call sites never name a queue. The work
# on the cluster has its own queue (its workers need the cluster's credentials); the expiry
# pass, usage and mail stay on Celery's default one. Exact names win over the pattern.
CELERY_TASK_ROUTES = {
    "portal.hubs.tasks.run_expiry": {"queue": "celery"},
    "portal.hubs.tasks.*": {"queue": "provisioning"},
}
# Workers and beat keep the portal's logging (JSON lines with the task's context) instead of
# Celery's own format (portal/celery.py).
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
# --- Server policy (portal/hubs/server_policy.py) -------------------------------------------------

# How often every running hub's servers are checked against their option's idle and age limits.
SERVER_POLICY_INTERVAL_SECONDS = env_int("SERVER_POLICY_INTERVAL_SECONDS", 60)
# A user is warned this long before their server stops (at most half of its limit).
SERVER_POLICY_WARNING_MINUTES = env_int("SERVER_POLICY_WARNING_MINUTES", 15)
# Warnings by e-mail to the server's user (always also on the portal's hub page).
SERVER_POLICY_MAIL = env_bool("SERVER_POLICY_MAIL", True)
# Idle GPU time counts once a server has had no activity for this long.
SERVER_POLICY_IDLE_AFTER_MINUTES = env_int("SERVER_POLICY_IDLE_AFTER_MINUTES", 10)
# The length of a policy minute in seconds: 60, except in tests and demos that shorten time.
SERVER_POLICY_MINUTE_SECONDS = env_int("SERVER_POLICY_MINUTE_SECONDS", 60)
if (
    min(SERVER_POLICY_INTERVAL_SECONDS, SERVER_POLICY_MINUTE_SECONDS) < 1
    or min(SERVER_POLICY_WARNING_MINUTES, SERVER_POLICY_IDLE_AFTER_MINUTES) < 0
):
    raise ImproperlyConfigured(
        "SERVER_POLICY_INTERVAL_SECONDS and SERVER_POLICY_MINUTE_SECONDS must be >= 1, "
        "SERVER_POLICY_WARNING_MINUTES and SERVER_POLICY_IDLE_AFTER_MINUTES >= 0"
    )

CELERY_BEAT_SCHEDULE = {
    # Re-queues hubs whose task got lost (worker died, broker restarted).
    "sweep-stuck-hubs": {
        "task": "portal.hubs.tasks.sweep_stuck_hubs",
        "schedule": env_int("SWEEP_INTERVAL_SECONDS", 60),
    },
    # Repairs hubs whose objects drifted or vanished in the cluster.
    "reconcile-hubs": {
        "task": "portal.hubs.tasks.reconcile_hubs",
        "schedule": env_int("RECONCILE_INTERVAL_SECONDS", 300),
    },
    # Warns owners before their hub's end date, suspends it at the end, deletes it after the
    # grace period (portal/hubs/expiry.py). Idempotent, so the interval is only about latency.
    "expire-hubs": {
        "task": "portal.hubs.tasks.run_expiry",
        "schedule": env_int("EXPIRY_INTERVAL_SECONDS", 3600),
    },
    # Usage: what every hub's pods and volumes hold, charged per interval (portal/usage/).
    "collect-usage": {
        "task": "portal.usage.tasks.collect_usage",
        "schedule": USAGE_COLLECT_INTERVAL_SECONDS,
    },
    "prune-usage": {"task": "portal.usage.tasks.prune_usage", "schedule": 24 * 3600},
    # Stops servers that idled or ran longer than their option allows, warning first
    # (portal/hubs/server_policy.py).
    "enforce-server-policy": {
        "task": "portal.hubs.tasks.enforce_server_policies",
        "schedule": SERVER_POLICY_INTERVAL_SECONDS,
    },
    # Reads users' groups and admin rights from the identity provider again (refresh tokens).
    "refresh-identities": {
        "task": "portal.accounts.tasks.refresh_identities",
        "schedule": OIDC_REFRESH_INTERVAL_SECONDS,
    },
    # Expired portal sessions (Django keeps them in the database until cleared).
    "clear-expired-sessions": {
        "task": "portal.accounts.tasks.clear_expired_sessions",
        "schedule": 24 * 3600,
    },
    # Placeholders ahead of class sessions, and gone after them (portal/hubs/classes.py).
    "keep-classes-warm": {
        "task": "portal.hubs.tasks.keep_classes_warm",
        "schedule": WARM_INTERVAL_SECONDS,
    },
    # Sends again the e-mails the mail server did not take (portal/notifications/mail.py).
    "retry-notices": {
        "task": "portal.notifications.tasks.retry_notices",
        "schedule": env_int("NOTICE_RETRY_INTERVAL_SECONDS", 60),
    },
}

# --- REST API -----------------------------------------------------------------------------------

REST_FRAMEWORK = {
    # Token first: anonymous callers get 401 with "WWW-Authenticate: Token".
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.accounts.tokens.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Keep TokenScopePermission in any view's own permission_classes: it refuses (403) a
    # token outside its scope (read: safe methods; write: changes; admin: admin actions).
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "portal.accounts.tokens.TokenScopePermission",
    ],
    # Unsafe methods only, per user (or IP), at API_WRITE_RATE; over it: 429 JSON.
    "DEFAULT_THROTTLE_CLASSES": ["portal.ratelimit.ApiWriteThrottle"],
    "DEFAULT_PARSER_CLASSES": ["portal.hubs.api.parsers.LimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "portal.hubs.api.pagination.Pagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "portal.hubs.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Hub on Demand API",
    "DESCRIPTION": "Request, approve, follow and delete JupyterHubs.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"HubState": "portal.hubs.lifecycle.HubState"},
    # Every operation documents the error answers it can give (400/401/403/404/409/429).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "portal.hubs.api.schema.add_error_responses",
    ],
}

# --- Security: cookies, HSTS, CSP, proxies, rate limits, cache --------------------------------

SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", SESSION_COOKIE_SECURE)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = env_str("SECURE_REFERRER_POLICY", "same-origin")
SESSION_COOKIE_HTTPONLY = True
# Database sessions that know their user (portal/accounts/sessions.py): ending one user's
# sessions is one indexed DELETE.
SESSION_ENGINE = "portal.accounts.sessions"
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
# Addresses (or CIDR ranges) of reverse proxies whose X-Forwarded-For is believed, e.g.
# "10.0.0.0/8"; the audit log's source IP is REMOTE_ADDR otherwise.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES")

# django-csp 4: no inline scripts or styles anywhere; everything comes from /static/.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# Sign-in: at most LOGIN_RATE_LIMIT_ATTEMPTS failed POSTs per IP and username in
# LOGIN_RATE_LIMIT_WINDOW seconds, then 429 until the window ends (0 attempts = no limit).
LOGIN_RATE_LIMIT_ATTEMPTS = env_int("LOGIN_RATE_LIMIT_ATTEMPTS", 10)
LOGIN_RATE_LIMIT_WINDOW = env_int("LOGIN_RATE_LIMIT_WINDOW", 300)
# The longest an API token lives, in days (createapitoken, the tokens page and the API give
# tokens this lifetime when none is asked for, and refuse a longer one); 0 = no maximum.
API_TOKEN_MAX_DAYS = env_int("API_TOKEN_MAX_DAYS", 90)
if API_TOKEN_MAX_DAYS < 0:
    raise ImproperlyConfigured("API_TOKEN_MAX_DAYS must be >= 0 (0: tokens may never expire)")
# API changes (POST, PUT, PATCH, DELETE) per user, in DRF's notation; empty = no limit.
API_WRITE_RATE = env_str("API_WRITE_RATE", "120/min")

# Rate limits are counted in the cache: Redis when CACHE_URL (or REDIS_URL) is set, so all
# processes share the counts; memory of the process otherwise (development, tests).
_CACHE_URL = env_str("CACHE_URL") or env_str("REDIS_URL")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": _CACHE_URL,
        "KEY_PREFIX": "hod",
    }
    if _CACHE_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}

# --- Operating the portal: metrics, health, logs (portal/monitoring/, portal/logconfig.py) ------

# /metrics of the web process answers `Authorization: Bearer <METRICS_TOKEN>`; unset, /metrics
# is 404. The worker and the hub watcher serve theirs over plain HTTP on these ports (0: off),
# for scrapers inside the cluster (a NetworkPolicy limits who reaches them).
METRICS_TOKEN = env_secret("METRICS_TOKEN", required=False)
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 9808)
WATCHER_METRICS_PORT = env_int("WATCHER_METRICS_PORT", 9809)
METRICS_LISTEN_ADDRESS = env_str("METRICS_LISTEN_ADDRESS", "0.0.0.0")
for _name, _port in (
    ("WORKER_METRICS_PORT", WORKER_METRICS_PORT),
    ("WATCHER_METRICS_PORT", WATCHER_METRICS_PORT),
):
    if not 0 <= _port <= 65535:
        raise ImproperlyConfigured(f"{_name}={_port} must be a port number (0 turns it off)")
# What /readyz checks (any of database, broker, kubernetes), each within this many seconds.
READINESS_CHECKS = env_list("READINESS_CHECKS", "database,broker,kubernetes")
if not set(READINESS_CHECKS) <= {"database", "broker", "kubernetes"}:
    raise ImproperlyConfigured(
        f"READINESS_CHECKS={','.join(READINESS_CHECKS)!r}: choose from database, broker, kubernetes"
    )
READINESS_TIMEOUT_SECONDS = env_int("READINESS_TIMEOUT_SECONDS", 2)
# Liveness of the worker, beat and the hub watcher: each touches <service>.heartbeat here every
# HEALTH_HEARTBEAT_SECONDS; `manage.py healthcheck SERVICE` fails once it is older than
# HEALTH_MAX_AGE_SECONDS (portal/monitoring/heartbeat.py).
HEALTH_HEARTBEAT_DIR = env_str(
    "HEALTH_HEARTBEAT_DIR", str(Path(tempfile.gettempdir()) / "hub-on-demand-health")
)
HEALTH_HEARTBEAT_SECONDS = env_int("HEALTH_HEARTBEAT_SECONDS", 10)
HEALTH_MAX_AGE_SECONDS = env_int("HEALTH_MAX_AGE_SECONDS", 60)
if HEALTH_HEARTBEAT_SECONDS < 1 or HEALTH_MAX_AGE_SECONDS <= HEALTH_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured(
        "HEALTH_HEARTBEAT_SECONDS must be >= 1 and HEALTH_MAX_AGE_SECONDS larger than it"
    )
CELERY_BEAT_SCHEDULER = "portal.monitoring.heartbeat:HeartbeatScheduler"
CELERY_BEAT_MAX_LOOP_INTERVAL = HEALTH_HEARTBEAT_SECONDS

# Logs: structlog on top of the standard library, one line per event for everything (Django,
# Celery, gunicorn); JSON unless DEBUG, or as LOG_FORMAT says (json or console).
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOG_FORMAT = env_str("LOG_FORMAT", "console" if DEBUG else "json").strip().lower()
if LOG_FORMAT not in logconfig.FORMATS:
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r} must be json or console")
logconfig.configure_structlog()
LOGGING = logconfig.logging_config(LOG_LEVEL, LOG_FORMAT)

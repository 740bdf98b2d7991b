"""Settings of the test OpenID Connect provider (django-oauth-toolkit), a separate Django project.

Everything comes from the environment the launcher (tests/oidc_provider/serve.py) sets:
OIDC_PROVIDER_DATA_DIR holds the SQLite file and the RS256 signing key, OIDC_PROVIDER_ISSUER
is the issuer URL (http://127.0.0.1:<port>/o). Never use this provider outside tests and
local trials: it runs Django's development server and keeps passwords of seeded users.
"""

import os
from pathlib import Path

DATA_DIR = Path(os.environ["OIDC_PROVIDER_DATA_DIR"])
ISSUER = os.environ["OIDC_PROVIDER_ISSUER"].rstrip("/")
KEY_FILE = DATA_DIR / "signing-key.pem"

SECRET_KEY = (DATA_DIR / "secret-key").read_text() if (DATA_DIR / "secret-key").exists() else "x"
DEBUG = False
# And the issuer's own host, when it serves on another address (the real node's link).
ALLOWED_HOSTS = [
    "127.0.0.1",
    "localhost",
    ISSUER.split("://", 1)[-1].split("/")[0].rsplit(":", 1)[0],
]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "oauth2_provider",
    "tests.oidc_provider",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.oidc_provider.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [Path(__file__).resolve().parent / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA_DIR / "provider.sqlite3",
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # test users only
LOGIN_URL = "/accounts/login/"
USE_TZ = True
TIME_ZONE = "UTC"
SESSION_COOKIE_NAME = "oidc_provider_session"  # not the portal's cookie on 127.0.0.1
CSRF_COOKIE_NAME = "oidc_provider_csrftoken"

OAUTH2_PROVIDER = {
    "OIDC_ENABLED": True,
    "OIDC_ISS_ENDPOINT": ISSUER,
    "OIDC_RSA_PRIVATE_KEY": KEY_FILE.read_text() if KEY_FILE.exists() else "",
    "OIDC_RP_INITIATED_LOGOUT_ENABLED": True,
    "OIDC_RP_INITIATED_LOGOUT_ALWAYS_PROMPT": False,
    "OAUTH2_VALIDATOR_CLASS": "tests.oidc_provider.validators.GroupsValidator",
    "SCOPES": {
        "openid": "OpenID Connect",
        "profile": "Your name, username and groups",
        "email": "Your e-mail address",
    },
    # Plain http on 127.0.0.1; PKCE is used when the client sends it (the portal does).
    "ALLOWED_REDIRECT_URI_SCHEMES": ["http", "https"],
    "ALLOWED_SCHEMES": ["http", "https"],
    "PKCE_REQUIRED": False,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}

"""Settings for Jobtracker, read from the environment.

Production sets ``DATABASE_URL`` and ``REDIS_URL``. When they are unset, the
URLs of the embedded PostgreSQL and Redis that ``./dev`` started for this
checkout are read from the data folder (see ``jobtracker.dev.services``), so
``python manage.py …`` in another shell talks to the same servers.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

from jobtracker.dev import services as dev_services
from processing.jobs import queues

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean from the environment ('1', 'true', 'yes', 'on' are true)."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    """Read an integer from the environment."""
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


DATA_DIR = Path(os.environ.get("JOBTRACKER_DATA_DIR", BASE_DIR / ".data"))

DEBUG = env_bool("DEBUG", False)
_embedded = dev_services.read_state(DATA_DIR) or {}
# Development: DEBUG on, anything ./dev runs, or a tool run by hand in a checkout where
# ./dev has run (its data folder exists). Anywhere else (production) a SECRET_KEY must
# be given.
DEVELOPMENT = DEBUG or env_bool("JOBTRACKER_DEV", False) or DATA_DIR.is_dir()
# /api/docs and /api/openapi.json: on in development, off in production unless set.
API_DOCS = env_bool("API_DOCS", DEVELOPMENT)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEVELOPMENT:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. In production set it to a long random string "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))'); "
            "for development, start the app with ./dev run."
        )
    SECRET_KEY = "insecure-development-key-set-SECRET_KEY-in-production"
ALLOWED_HOSTS = [
    h.strip() for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h
]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

# HTTPS: on in production (off in development). Behind a proxy that ends TLS, name the
# header it sets, e.g. SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO.
HTTPS = env_bool("HTTPS", not DEVELOPMENT)
if os.environ.get("SECURE_PROXY_SSL_HEADER"):
    SECURE_PROXY_SSL_HEADER = (os.environ["SECURE_PROXY_SSL_HEADER"], "https")
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
# Content-Security-Policy (Django's own), in development too so the browser tests run
# under it: only this site's scripts, styles and sockets; no inline code, no eval (htmx
# is told not to use it), no framing.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}

DATABASE_URL = os.environ.get("DATABASE_URL") or _embedded.get("DATABASE_URL", "")
REDIS_URL = os.environ.get("REDIS_URL") or _embedded.get("REDIS_URL", "")
if not DATABASE_URL:
    # Nothing running yet: settings still load (for `check`, `makemigrations`),
    # and the first query says how to start the services.
    DATABASE_URL = "postgres://jobtracker-not-started@127.0.0.1:1/jobtracker"
if not REDIS_URL:
    REDIS_URL = "redis://127.0.0.1:1/0"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "channels",
    "django_rq",
    "django_htmx",
    "ninja",  # its API docs page then uses its own static files, not a CDN
    "processing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Before anything reads a request body (CSRF's check reads POST).
    "processing.upload_limits.UploadGuardMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "processing.api.middleware.ApiErrorEnvelopeMiddleware",
]

ROOT_URLCONF = "jobtracker.urls"
ASGI_APPLICATION = "jobtracker.asgi.application"
WSGI_APPLICATION = None

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

DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [
    BASE_DIR / "static",
    ("vendor/htmx", BASE_DIR / "node_modules" / "htmx.org" / "dist"),
    ("vendor/htmx-ext-ws", BASE_DIR / "node_modules" / "htmx-ext-ws" / "dist"),
]
WHITENOISE_USE_FINDERS = True
# WhiteNoise warns about a missing STATIC_ROOT even when it serves from the finders.
with contextlib.suppress(OSError):
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", DATA_DIR / "media"))
MEDIA_URL = "/media/"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "matter-list"
LOGOUT_REDIRECT_URL = "login"

# Uploads: the limit is enforced while the body streams in (jobtracker/serve.py,
# processing/upload_limits.py), before anything is stored.
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 50 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_HANDLERS = [
    "processing.upload_limits.LimitedUploadHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
# Per person: uploads a minute, and bytes an hour (429 RATE_LIMITED beyond them).
UPLOADS_PER_MINUTE = env_int("UPLOADS_PER_MINUTE", 30)
UPLOAD_BYTES_PER_HOUR = env_int("UPLOAD_BYTES_PER_HOUR", 2 * 1024**3)
# Sign-in: failed attempts per username, and attempts per address, in LOGIN_WINDOW seconds.
LOGIN_FAILURES_PER_USERNAME = env_int("LOGIN_FAILURES_PER_USERNAME", 5)
LOGIN_ATTEMPTS_PER_ADDRESS = env_int("LOGIN_ATTEMPTS_PER_ADDRESS", 30)
LOGIN_WINDOW = env_int("LOGIN_WINDOW", 900)

# Limits a document must stay within (DOCUMENT_TOO_COMPLEX beyond them).
DOCUMENT_MAX_PAGES = env_int("DOCUMENT_MAX_PAGES", 5000)
DOCUMENT_MAX_TEXT_BYTES = env_int("DOCUMENT_MAX_TEXT_BYTES", 200 * 1024 * 1024)
# Documents with fewer pages than this go to the high-priority queue. The upload never
# opens a document, so its first stage is routed by size (under HIGH_QUEUE_MAX_BYTES:
# high); once the first stage has counted the pages, the rest follow the page count.
HIGH_QUEUE_MAX_PAGES = env_int("HIGH_QUEUE_MAX_PAGES", 100)
# A Word file's zip, walked before python-docx reads it: members, the unpacked bytes of
# each and of all (declared, and counted while inflating), XML elements in every part.
DOCX_MAX_PARTS = env_int("DOCX_MAX_PARTS", 10_000)
DOCX_MAX_UNPACKED_BYTES = env_int("DOCX_MAX_UNPACKED_BYTES", 256 * 1024 * 1024)
DOCX_MAX_XML_ELEMENTS = env_int("DOCX_MAX_XML_ELEMENTS", 2_000_000)
HIGH_QUEUE_MAX_BYTES = env_int("HIGH_QUEUE_MAX_BYTES", 5 * 1024 * 1024)
# Address space a work horse may add to what it maps when its stage begins (bytes; 0: no
# limit). A stage that needs more fails DOCUMENT_TOO_COMPLEX, not retried, and the worker
# takes its next job (processing.jobs.sandbox).
STAGE_MEMORY_LIMIT = env_int("STAGE_MEMORY_LIMIT", 1024**3)
# The entities stage stops counting past these (and notes it on the page).
ENTITIES_MAX_PER_PAGE = env_int("ENTITIES_MAX_PER_PAGE", 5_000)
ENTITIES_MAX_PER_DOCUMENT = env_int("ENTITIES_MAX_PER_DOCUMENT", 200_000)
# HTML is parsed within these: elements read, and nesting depth (deeper text is
# still read, flattened); a document cut short says so in a page note.
HTML_MAX_NODES = env_int("HTML_MAX_NODES", 500_000)

# Progress writes are throttled to one per job per this many seconds.
PROGRESS_WRITE_INTERVAL = float(os.environ.get("PROGRESS_WRITE_INTERVAL", "0.5"))
JOB_MAX_RETRIES = env_int("JOB_MAX_RETRIES", 3)
RETRY_BACKOFF_BASE = float(os.environ.get("RETRY_BACKOFF_BASE", "5"))
RETRY_BACKOFF_MAX = float(os.environ.get("RETRY_BACKOFF_MAX", "600"))
# A running stage asks whether its job was cancelled between items, at most this often
# (a progress write answers too): items that take longer than this stop at the first
# item after a cancel, quicker ones at most this long after it.
CANCEL_CHECK_INTERVAL = float(os.environ.get("CANCEL_CHECK_INTERVAL", "0.25"))
# A cancelled job's stage that has not stopped this many seconds after the cancel (stuck
# inside one item: a long OCR page) has its work horse killed by RQ's stop-job command
# (lifecycle.stop_stuck_stage).
CANCEL_GRACE_SECONDS = float(os.environ.get("CANCEL_GRACE_SECONDS", "5"))
# A running stage holds a lease on its job for this long, renewed by its progress writes
# and, while it writes none, by a heartbeat every LEASE_RENEW_SECONDS. A stage whose lease
# ran out (its worker was SIGKILLed, OOM-killed, or lost its host) is rescued by recovery:
# WORKER_LOST, retried at once. Worker and recovery hosts' clocks must agree within a few
# seconds of it.
LEASE_SECONDS = float(os.environ.get("LEASE_SECONDS", "15"))
LEASE_RENEW_SECONDS = float(os.environ.get("LEASE_RENEW_SECONDS", "5"))
STAGE_TIMEOUT = env_int("STAGE_TIMEOUT", 1800)
# A stage whose time grows with the pages (OCR) gets more per page, up to this; past it
# a stage times out and retries, resuming after the pages it finished.
STAGE_TIMEOUT_MAX = env_int("STAGE_TIMEOUT_MAX", 12 * 3600)

# External stages (processing.api.callbacks): the shared secret an outside service signs
# its callbacks with (HMAC-SHA256). Unset, every callback is refused (401
# CALLBACKS_NOT_CONFIGURED). A signed request is good for CALLBACK_MAX_AGE seconds either
# side of now; its nonce is remembered CALLBACK_NONCE_RETENTION_HOURS.
EXTERNAL_CALLBACK_SECRET = os.environ.get("EXTERNAL_CALLBACK_SECRET", "")
CALLBACK_MAX_AGE = env_int("CALLBACK_MAX_AGE", 300)
CALLBACK_NONCE_RETENTION_HOURS = float(os.environ.get("CALLBACK_NONCE_RETENTION_HOURS", "24"))

# Recovery (processing.jobs.recovery, run by `manage.py upkeep` and `manage.py recover`):
# a QUEUED job untouched for this long whose queue entry is gone is enqueued again; the
# grace keeps a pass from racing an enqueue happening right now (a fresh upload's).
RECOVERY_GRACE_SECONDS = float(os.environ.get("RECOVERY_GRACE_SECONDS", "10"))
# `manage.py upkeep` runs a recovery pass this often, and the retention pass this often.
RECOVERY_INTERVAL = float(os.environ.get("RECOVERY_INTERVAL", "5"))
RETENTION_INTERVAL = float(os.environ.get("RETENTION_INTERVAL", "300"))
# Retention (processing.jobs.retention, `manage.py prune`): RQ's data of finished and failed
# queue entries is removed after this many hours, and the stage history of jobs that
# finished more than this many days ago. The audit trail is kept (it is append-only).
RQ_RESULT_RETENTION_HOURS = float(os.environ.get("RQ_RESULT_RETENTION_HOURS", "24"))
STAGE_HISTORY_RETENTION_DAYS = float(os.environ.get("STAGE_HISTORY_RETENTION_DAYS", "30"))

# Tests (pytest sets PYTEST_VERSION) keep their queues, channels and files apart, so a
# running `./dev run` on the same servers never picks up a test's work.
TESTING = "PYTEST_VERSION" in os.environ
REDIS_DB = env_int("REDIS_DB", 15 if TESTING else -1)
if TESTING:
    MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", DATA_DIR / "test-media"))


def with_redis_db(url: str, db: int) -> str:
    """``url`` pointing at database ``db`` (for redis:// a path, for unix:// a query)."""
    if db < 0:
        return url
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "db"] + [("db", str(db))]
        # urlunsplit would drop the empty authority ("unix:/path"), which redis-py refuses.
        return f"unix://{parts.netloc}{parts.path}?{urlencode(query)}"
    return urlunsplit(parts._replace(path=f"/{db}"))


def redis_db_of(url: str) -> int:
    """The database number a Redis URL selects (0 when it names none)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return int(dict(parse_qsl(parts.query)).get("db", "0") or 0)
    return int(parts.path.strip("/") or 0)


REDIS_URL = with_redis_db(REDIS_URL, REDIS_DB)
RQ_QUEUES = {name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": STAGE_TIMEOUT} for name in queues.QUEUES}
RQ_SHOW_ADMIN_LINK = True
RQ = {"WORKER_CLASS": "processing.jobs.worker.Worker"}

# Redis pub/sub channels are not kept apart by database number, so the live channels
# carry it in their names: tests and a `./dev run` on the same server never cross.
LIVE_PREFIX = f"jobtracker:{redis_db_of(REDIS_URL)}:"
# The pub-sub layer: under load the core layer drops whole messages past its
# per-channel capacity without a word; pub-sub delivers them all (late, if it must).
# bench/push_latency.py measures both.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": os.environ.get(
            "CHANNEL_LAYER_BACKEND", "channels_redis.pubsub.RedisPubSubChannelLayer"
        ),
        "CONFIG": {"hosts": [REDIS_URL], "prefix": f"{LIVE_PREFIX}asgi"},
    }
}
# A job's progress is pushed at most this often (a status change goes out at once):
# at most four pushes a second per job, whatever the worker writes.
LIVE_PROGRESS_INTERVAL = float(os.environ.get("LIVE_PROGRESS_INTERVAL", "0.25"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

NINJA_PAGINATION_MAX_LIMIT = 100

# OCR (the ``ocr`` stage runs Tesseract, Debian package tesseract-ocr). A page
# whose text layer has fewer than OCR_MIN_TEXT_CHARS letters or digits is
# drawn at OCR_DPI, never over OCR_MAX_PIXELS pixels (a huge page is drawn at a
# lower resolution), and read with a time limit of OCR_TIMEOUT seconds.
# OCR_LANG is Tesseract's -l value ("eng", "eng+deu"). An image upload with a
# page over IMAGE_MAX_PIXELS fails at open with DOCUMENT_TOO_COMPLEX (Pillow
# itself refuses anything over about 179 megapixels).
OCR_COMMAND = os.environ.get("OCR_COMMAND", "tesseract")
OCR_LANG = os.environ.get("OCR_LANG", "eng")
OCR_DPI = env_int("OCR_DPI", 300)
OCR_MAX_PIXELS = env_int("OCR_MAX_PIXELS", 25_000_000)
OCR_TIMEOUT = env_int("OCR_TIMEOUT", 120)
OCR_MIN_TEXT_CHARS = env_int("OCR_MIN_TEXT_CHARS", 20)
IMAGE_MAX_PIXELS = env_int("IMAGE_MAX_PIXELS", 150_000_000)
# What is decoded whole: a PNG or TIFF page, or an image inside a PDF page being drawn for
# OCR, over this many pixels fails with DOCUMENT_TOO_COMPLEX before it is decoded. A JPEG
# is decoded at a reduced scale (1/2, 1/4, 1/8) when bigger than OCR needs, so only
# IMAGE_MAX_PIXELS applies to it.
IMAGE_MAX_DECODED_PIXELS = env_int("IMAGE_MAX_DECODED_PIXELS", 64_000_000)

"""Settings for pbxscreen, read from the environment.

The defaults give the embedded setup: a SQLite file under ``var/``, the in-process channel layer
and a local-memory cache, all inside one process. ``DATABASE_URL`` and ``REDIS_URL`` switch to the
scale-out setup (PostgreSQL, channels_redis and a Redis cache shared by every process).
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from screening import speedups

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true or false)")


def env_float(name: str, default: float, *, minimum: float, maximum: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if not minimum <= value <= maximum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be between {minimum} and {maximum}")
    return value


def env_token(name: str, *, min_length: int = 16) -> str:
    """A secret sent in an HTTP header: empty (off), or at least ``min_length`` visible ASCII
    characters (no spaces, control or non-ASCII characters a header could not carry as given)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return ""
    if not all("!" <= ch <= "~" for ch in raw):
        raise ImproperlyConfigured(
            f"{name} may only hold visible ASCII characters (letters, digits, punctuation)"
        )
    if len(raw) < min_length:
        raise ImproperlyConfigured(f"{name} must be at least {min_length} characters long")
    return raw


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    # A fixed development key keeps sessions valid across restarts of the embedded demo; a real
    # deployment sets SECRET_KEY (`check --deploy` flags the insecure prefix).
    SECRET_KEY = "django-insecure-pbxscreen-embedded-demo-key-set-SECRET_KEY-in-production"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # the API reference's assets, served from static, no CDN
    "screening",
]
# The bench, the soak and the history seeder (screening/devtools): on by default, so the two make
# targets and the tests find their commands; a production install sets DEV_TOOLS=false.
DEV_TOOLS = env_bool("DEV_TOOLS", True)
if DEV_TOOLS:
    INSTALLED_APPS.append("screening.devtools")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Django's LocaleMiddleware (Accept-Language), then the user's own language and time zone.
    "screening.i18n.LocaleMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "pbxscreen.urls"
ASGI_APPLICATION = "pbxscreen.asgi.application"

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
                "screening.context_processors.pbx_link",
                "screening.context_processors.trunk_warning",
                "screening.i18n.preferences",
            ],
        },
    },
]

# --- Speedups -------------------------------------------------------------------------------
# Which of screening/speedups are on: all (default), none, or a comma-separated list of names
# (screening/speedups/README.md). Each one off falls back to the library's stock behaviour.
try:
    SPEEDUPS = speedups.parse(env_str("SPEEDUPS", "all"))
except ValueError as exc:
    raise ImproperlyConfigured(f"SPEEDUPS: {exc}") from None

# --- Database -------------------------------------------------------------------------------
VAR_DIR = BASE_DIR / "var"
DEFAULT_SQLITE = f"sqlite:///{VAR_DIR / 'pbxscreen.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(env_str("DATABASE_URL", DEFAULT_SQLITE))}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    if "sqlite_queue" in SPEEDUPS:
        # Stock SQLite plus a fair in-process queue for write transactions (screening/speedups).
        _db["ENGINE"] = "screening.speedups.backends.sqlite3"
    # WAL lets the web threads read while one writes; IMMEDIATE takes the write lock at BEGIN so
    # two concurrent claims queue on the lock instead of failing with "database is locked".
    _db["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests run against a file (not :memory:) so that a real server process can share it; one
    # per test process, so parallel runs in one checkout do not trample each other.
    _name = Path(str(_db["NAME"]))
    _db["TEST"] = {"NAME": str(_name.with_name(f"{_name.stem}-test-{os.getpid()}{_name.suffix}"))}
    _db["CONN_MAX_AGE"] = None  # opening SQLite per request only costs; worker threads are bounded
    Path(str(_db["NAME"])).parent.mkdir(parents=True, exist_ok=True)
else:
    _db["CONN_MAX_AGE"] = 60
    _db["CONN_HEALTH_CHECKS"] = True
    _db["TEST"] = {"NAME": f"test_{_db['NAME']}_{os.getpid()}"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer and cache ----------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    # redis-py's asyncio pool allows 100 connections by default: a burst of reconnecting browsers
    # then fails group_add with MaxConnectionsError (a 500 on the handshake).
    REDIS_MAX_CONNECTIONS = int(
        env_float("REDIS_MAX_CONNECTIONS", 2000, minimum=10, maximum=100_000)
    )
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "max_connections": REDIS_MAX_CONNECTIONS,
                        # A restarted Redis leaves dead pooled sockets: notice them before use.
                        "health_check_interval": 10,
                        "socket_connect_timeout": 5,
                        "retry_on_timeout": True,
                    }
                ],
                # The default capacity (100) silently drops pushes to a busy operator socket.
                "capacity": 1000,
                "expiry": 30,
            },
        }
    }
    # Pushes go over Redis pub/sub (channels_redis's own RedisPubSubChannelLayer): one PUBLISH per
    # broadcast, fanned out inside each web process, where the list-based layer queues one entry
    # per socket and pops them one Redis round trip each (docs/performance.md).
    # REDIS_CHANNEL_LAYER=core restores the list-based layer (capacity/expiry apply to it only).
    if env_str("REDIS_CHANNEL_LAYER", "pubsub").strip().lower() != "core":
        # The same layer, each push decoded once per process and written at once to the idle
        # sockets rather than queued to each (screening/speedups/redis_layer.py).
        CHANNEL_LAYERS["default"]["BACKEND"] = (
            "screening.speedups.redis_layer.FanOutRedisPubSubChannelLayer"
            if "redis_fanout" in SPEEDUPS
            else "channels_redis.pubsub.RedisPubSubChannelLayer"
        )
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "pbxscreen",
            # Bounded waits: a Redis outage must fail a request, not hang a worker thread.
            "OPTIONS": {
                "socket_connect_timeout": 5,
                "socket_timeout": 5,
                "health_check_interval": 10,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        # Stock InMemoryChannelLayer makes a broadcast O(N²) (screening/speedups/layer.py).
        "default": {
            "BACKEND": "screening.speedups.layer.FastInMemoryChannelLayer"
            if "memory_layer" in SPEEDUPS
            else "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 1000},
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Auth -----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# ModelBackend, with the signed-in user and their permissions kept per process under a generation
# in the shared cache (screening/authcache.py): no user or permission query on a request, and a
# change of access still seen at once by every process. ModelBackend itself stays listed so that
# sessions signed in through it stay valid.
AUTHENTICATION_BACKENDS = [
    "screening.authcache.CachedModelBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

# --- REST API (screening/api, docs/api.md) ---------------------------------------------------
REST_FRAMEWORK = {
    # Token first: an anonymous request is answered 401 with "WWW-Authenticate: Token".
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "screening.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",  # the browser's, with CSRF
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "screening.api.parsers.JSONParser",  # deep nesting is a 400, not a 500
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",  # form posts, as the dashboard takes them
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "pbxscreen API",
    "DESCRIPTION": "Calls, decisions, rules, contacts and statistics (docs/api.md).",
    "VERSION": "1",
    "SCHEMA_PATH_PREFIX": "/api/v1/",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # The reference's assets come from the drf-spectacular-sidecar package: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Security (effective when DEBUG is off; see docs/deployment.md) -----------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# HSTS stays off in the embedded setup (plain http on loopback); behind TLS set it, starting small:
# browsers remember it for that long even if TLS is later taken away.
SECURE_HSTS_SECONDS = int(env_float("SECURE_HSTS_SECONDS", 0, minimum=0, maximum=10**9))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# /healthz is probed over plain http by load balancers and monitors on the inside.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
# A monitor sending `Authorization: Bearer <HEALTHZ_TOKEN>` gets /healthz with its detail (the PBX's
# address, error texts), as logged-in staff do; anyone else gets the state words only. Empty: off.
HEALTHZ_TOKEN = env_str("HEALTHZ_TOKEN").strip()
# /metrics (screening/metrics.py, docs/metrics.md): set, only `Authorization: Bearer
# <METRICS_TOKEN>` reads it; unset, only clients on this host that did not come through a proxy.
# Production sets it: behind nginx every request comes from loopback.
METRICS_TOKEN = env_token("METRICS_TOKEN")
# Daphne behind nginx: take the client address from X-Forwarded-For (login throttling uses it).
# Only set it when a proxy you run overwrites that header.
PROXY_HEADERS = env_bool("PROXY_HEADERS", False)
# Login throttling (screening/throttle.py), counted in the (shared) cache before any password is
# hashed: after LOGIN_FAILURE_LIMIT wrong passwords for one account from one address, that pair is
# refused for LOGIN_LOCKOUT_SECONDS; after LOGIN_ADDRESS_FAILURE_LIMIT wrong passwords from one
# address for any usernames, that address is.
LOGIN_FAILURE_LIMIT = int(env_float("LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=1000))
LOGIN_ADDRESS_FAILURE_LIMIT = int(
    env_float("LOGIN_ADDRESS_FAILURE_LIMIT", 20, minimum=1, maximum=100_000)
)
LOGIN_LOCKOUT_SECONDS = int(env_float("LOGIN_LOCKOUT_SECONDS", 300, minimum=1, maximum=86400))
# Password hashing takes a core for a noticeable time and releases the GIL: at most this many
# checks run at once per process, this many more wait, and the rest are answered 503 unhashed, so
# a flood of logins cannot take the cores that decisions need.
LOGIN_CONCURRENT_CHECKS = int(env_float("LOGIN_CONCURRENT_CHECKS", 1, minimum=1, maximum=64))
LOGIN_CHECK_QUEUE = int(env_float("LOGIN_CHECK_QUEUE", 8, minimum=0, maximum=1000))

# --- I18N / static --------------------------------------------------------------------------
# English is British English ("en-gb": 24-hour clock, day before month); a browser asking for any
# English gets it, as Django picks the supported variant of a language. docs/languages.md.
LANGUAGE_CODE = "en-gb"
LANGUAGES = [
    ("en-gb", _("English")),
    ("de", _("German")),
    ("fr", _("French")),
    ("es", _("Spanish")),
]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# The embedded setup serves /static/ itself; behind nginx (see deploy/) set SERVE_STATIC=false.
SERVE_STATIC = env_bool("SERVE_STATIC", True)

# --- PBX ------------------------------------------------------------------------------------
PBX_BASE_URL = env_str("PBX_BASE_URL").rstrip("/")
PBX_CLIENT_ID = env_str("PBX_CLIENT_ID")
PBX_CLIENT_SECRET = env_str("PBX_CLIENT_SECRET")
_verify = env_str("PBX_VERIFY_TLS", "true")
if _verify.strip().lower() in {"true", "1", "yes", "on", ""}:
    PBX_VERIFY_TLS: bool | str = True
elif _verify.strip().lower() in {"false", "0", "no", "off"}:
    PBX_VERIFY_TLS = False
elif Path(_verify).exists():
    PBX_VERIFY_TLS = _verify  # a CA bundle for a PBX whose certificate is not publicly trusted
else:
    raise ImproperlyConfigured(
        f"PBX_VERIFY_TLS={_verify!r} is neither true/false nor an existing CA bundle path"
    )
# Decisions go out on a connection each web process opens to the PBX when a call arrives, while
# the operator reads the card (screening/pbx/preopen.py): at most this many at once per process;
# 0 sends each decision on a connection of its own, opened when it is sent.
PBX_PREOPEN_CONNECTIONS = int(env_float("PBX_PREOPEN_CONNECTIONS", 20, minimum=0, maximum=1000))
# `serve` runs the PBX listener in-process (embedded). With several web processes, exactly one
# listener must run: set PBX_LISTENER=off for the web processes and run `manage.py pbx_listen`.
PBX_LISTENER = env_bool("PBX_LISTENER", True)
PBX_EVENTS = env_str("PBX_EVENTS", "websocket").strip().lower()
if PBX_EVENTS not in {"websocket", "webhook"}:
    raise ImproperlyConfigured(f"PBX_EVENTS={PBX_EVENTS!r} must be 'websocket' or 'webhook'")
PBX_WEBHOOK_SECRET = env_str("PBX_WEBHOOK_SECRET")
SCREEN_WINDOW_SECONDS = env_float("SCREEN_WINDOW_SECONDS", 10.0, minimum=1.0, maximum=60.0)
SCREEN_SAFETY_MARGIN_SECONDS = env_float(
    "SCREEN_SAFETY_MARGIN_SECONDS", 0.5, minimum=0.0, maximum=5.0
)
# Listener heartbeat: the PBX cuts a socket after 60 s of silence; the docs leave the interval to
# us, so stay well inside it. Tests shorten it together with the simulator's idle cut.
PBX_HEARTBEAT_SECONDS = env_float("PBX_HEARTBEAT_SECONDS", 20.0, minimum=0.1, maximum=30.0)
# How far back a starting listener looks for calls the PBX offered while nobody listened
# (screening/calls/reconcile.py, docs/outages.md).
OUTAGE_LOOKBACK_HOURS = env_float("OUTAGE_LOOKBACK_HOURS", 24.0, minimum=0.0, maximum=24.0 * 31)

# --- The record: retention and pseudonyms (screening/calls/retention.py, docs/record.md) ---
# Calls, audit rows and notes older than RETENTION_DAYS keep everything but the caller's number,
# which becomes its keyed pseudonym (PSEUDONYM_KEY). 0 keeps numbers for ever.
RETENTION_DAYS = int(env_float("RETENTION_DAYS", 0, minimum=0, maximum=100 * 365))
PSEUDONYM_KEY = env_str("PSEUDONYM_KEY")
if RETENTION_DAYS and len(PSEUDONYM_KEY) < 16:
    raise ImproperlyConfigured(
        "RETENTION_DAYS is set, so PSEUDONYM_KEY must be too (a secret of at least 16 characters,"
        " kept outside the database and never changed: it is what makes a pseudonym irreversible)"
    )

# --- Contacts (screening/contacts) ---
# Every server process's sweeper copies the PBX's company contacts this often (one process at a
# time, under a cache lock); 0 turns the periodic sync off (`manage.py sync_contacts` still works).
CONTACT_SYNC_MINUTES = env_float("CONTACT_SYNC_MINUTES", 60, minimum=0, maximum=7 * 24 * 60)

# --- External caller lookups (screening/calls/lookups.py, docs/lookups.md) -------------------
# A card is pushed at once with what the database knows; these only ever add a name afterwards.
# CALLER_LOOKUP_URL: an http(s) URL template with {number} (URL-quoted when filled in), answering
# JSON; CALLER_LOOKUP_NAME_FIELD: the dotted path of the name in it ("results.0.name" for lists).
CALLER_LOOKUP_URL = env_str("CALLER_LOOKUP_URL").strip()
if CALLER_LOOKUP_URL:
    from urllib.parse import urlsplit

    _lookup_url = urlsplit(CALLER_LOOKUP_URL.replace("{number}", "0"))
    if _lookup_url.scheme not in {"http", "https"} or not _lookup_url.hostname:
        raise ImproperlyConfigured(
            f"CALLER_LOOKUP_URL={CALLER_LOOKUP_URL!r} must be an http:// or https:// URL"
        )
    if "{number}" not in CALLER_LOOKUP_URL:
        raise ImproperlyConfigured(
            f"CALLER_LOOKUP_URL={CALLER_LOOKUP_URL!r} must contain {{number}} (the caller's number)"
        )
CALLER_LOOKUP_NAME_FIELD = env_str("CALLER_LOOKUP_NAME_FIELD", "name").strip() or "name"
if any(not part.strip() for part in CALLER_LOOKUP_NAME_FIELD.split(".")):
    raise ImproperlyConfigured(
        f"CALLER_LOOKUP_NAME_FIELD={CALLER_LOOKUP_NAME_FIELD!r} must be a dotted path such as "
        "name or results.0.name (no empty parts)"
    )
# One budget for all the lookups of a call, from intake on; a name found later is not shown.
CALLER_LOOKUP_BUDGET_MS = int(env_float("CALLER_LOOKUP_BUDGET_MS", 800, minimum=50, maximum=5000))
# Names found are cached per number this long; numbers nobody knows for min(300 s, this); 0: off.
CALLER_LOOKUP_CACHE_SECONDS = int(
    env_float("CALLER_LOOKUP_CACHE_SECONDS", 86400, minimum=0, maximum=30 * 86400)
)
# More backends: comma-separated dotted paths of functions (number: str) -> str | Found | None.
CALLER_LOOKUP_BACKENDS = env_list("CALLER_LOOKUP_BACKENDS", [])
for _backend in CALLER_LOOKUP_BACKENDS:
    if not all(part.isidentifier() for part in _backend.split(".")) or "." not in _backend:
        raise ImproperlyConfigured(
            f"CALLER_LOOKUP_BACKENDS: {_backend!r} is not a dotted path such as mypkg.crm.lookup"
        )

# --- Precedent, the shadow suggestion and the review queue (docs/precedent.md) ----------------
# Each decision on a number weighs 1 when made and half as much every half-life.
PRECEDENT_HALF_LIFE_DAYS = env_float("PRECEDENT_HALF_LIFE_DAYS", 30, minimum=0.01, maximum=36500)
# The card suggests a decision (shown only, never applied) once people decided the number at least
# this many times and the smoothed probability of refusal is at least the threshold (refuse) or at
# most 1 - threshold (accept).
SUGGEST_MIN_DECISIONS = int(env_float("SUGGEST_MIN_DECISIONS", 5, minimum=1, maximum=100_000))
SUGGEST_THRESHOLD = env_float("SUGGEST_THRESHOLD", 0.8, minimum=0.5, maximum=1.0)
# /review/: block suggestions for numbers refused at least K times by at least 2 operators in the
# last D days; a refusal is questioned when the number then called back N times within an hour.
REVIEW_MIN_REFUSALS = int(env_float("REVIEW_MIN_REFUSALS", 3, minimum=2, maximum=10_000))
REVIEW_WINDOW_DAYS = int(env_float("REVIEW_WINDOW_DAYS", 7, minimum=1, maximum=365))
REVIEW_CALLBACK_COUNT = int(env_float("REVIEW_CALLBACK_COUNT", 3, minimum=1, maximum=1000))

# --- Outgoing webhooks (screening/webhooks, docs/webhooks.md) ---------------------------------
# Every server process delivers the outbox in a thread of its own; WEBHOOK_DELIVERY=false turns
# that process's sender off (the others still deliver).
WEBHOOK_DELIVERY = env_bool("WEBHOOK_DELIVERY", True)
# A failed attempt is retried after a random delay between 0 and BASE x 2^(attempts - 1) seconds
# (full jitter), at most CAP, until MAX_AGE after the event; then the delivery is dead.
WEBHOOK_RETRY_BASE_SECONDS = env_float(
    "WEBHOOK_RETRY_BASE_SECONDS", 5.0, minimum=0.01, maximum=3600
)
WEBHOOK_RETRY_CAP_SECONDS = env_float(
    "WEBHOOK_RETRY_CAP_SECONDS", 3600.0, minimum=0.01, maximum=86400
)
WEBHOOK_MAX_AGE_SECONDS = env_float(
    "WEBHOOK_MAX_AGE_SECONDS", 86400.0, minimum=1, maximum=30 * 86400
)
WEBHOOK_CONNECT_TIMEOUT_SECONDS = env_float(
    "WEBHOOK_CONNECT_TIMEOUT_SECONDS", 3.0, minimum=0.1, maximum=30
)
WEBHOOK_READ_TIMEOUT_SECONDS = env_float(
    "WEBHOOK_READ_TIMEOUT_SECONDS", 10.0, minimum=0.1, maximum=60
)
# Requests one sender has in flight at once. 1 (default): sent from the sender's own thread;
# more adds that many HTTP threads, which slow the same process's intake (the GIL).
WEBHOOK_CONCURRENCY = int(env_float("WEBHOOK_CONCURRENCY", 1, minimum=1, maximum=64))
# How often a sender looks for rows other processes wrote and retries coming due (its own new
# rows wake it at once).
WEBHOOK_POLL_SECONDS = env_float("WEBHOOK_POLL_SECONDS", 1.0, minimum=0.05, maximum=60)
# How long a process trusts its list of active endpoints (no query per call when none is
# active); another process's change to an endpoint takes effect within this delay.
WEBHOOK_ENDPOINT_CACHE_SECONDS = env_float(
    "WEBHOOK_ENDPOINT_CACHE_SECONDS", 5.0, minimum=0, maximum=300
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "screening": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
        "django.request": {"handlers": ["console"], "level": "ERROR"},
    },
}

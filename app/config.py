"""Defaults for every setting; each can be overridden by an IPAAS_* environment variable."""
from __future__ import annotations

DEFAULTS: dict[str, object] = {
    "DATABASE_URL": "sqlite:///instance/ipaas.sqlite3",
    "DB_POOL_SIZE": 10,  # PostgreSQL: connections per process at most
    "WORKERS": 10,
    "QUEUE_SIZE": 100,
    "ENQUEUE_TIMEOUT": 5.0,
    "JOB_TIMEOUT": 300.0,
    "MAX_ATTEMPTS": 3,
    "CORS_ORIGINS": "http://localhost:3000",
    "MAX_PAYLOAD_BYTES": 1048576,
    "ALLOW_PRIVATE_NETWORKS": False,
    "TENANT_RATE": 100.0,
    "TENANT_BURST": 1000.0,
    "BREAKER_FAILURES": 5,
    "BREAKER_RESET": 300.0,
    "LOG_LEVEL": "INFO",
    "EXECUTION_RETENTION_DAYS": 30.0,  # finished executions older than this are purged; 0 keeps them
    # Distributed mode (engine/distributed.py): unset runs executions in the web processes' own pool.
    "BROKER_URL": "",
    "GRACEFUL_TIMEOUT": 30,  # seconds a stopping worker process gives running executions (as gunicorn's)
    "WORKER_METRICS_PORT": 0,  # `worker` serves its processes' metrics on this port; 0: not served
    # Not in the public contract: tuning knobs a user rarely needs, documented in README.
    "HTTP_TIMEOUT": 10.0,  # default per-request timeout of actions, seconds
    "RETRY_BASE_DELAY": 0.5,  # first retry backoff, seconds; doubles per attempt, with jitter
    "RETRY_MAX_DELAY": 30.0,
    "IDEMPOTENCY_TTL": 86400.0,
    "REQUEUE_AFTER": 10.0,  # seconds an unowned queued execution waits before the sweeper enqueues it again
    "SCHEDULER_TICK": 1.0,  # seconds between the scheduler's rounds: a slot fires within this
    # Test-only: seconds added to the scheduler's clock, so a real-process test sees a slot due at once.
    "SCHEDULER_CLOCK_OFFSET": 0.0,
    # gunicorn.conf.py turns this on for its workers; CLI commands import the same app and must not
    # start a pool that would adopt and run executions.
    "START_ENGINE": False,
    # Dashboard session cookie (Flask's own settings): not readable by scripts, not sent on cross-site
    # POSTs. Set IPAAS_SESSION_COOKIE_SECURE=true when the dashboard is served over HTTPS.
    "SESSION_COOKIE_NAME": "ipaas_session",
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_SECURE": False,
}

_TYPES = {key: type(value) for key, value in DEFAULTS.items()}
_TRUE = {"1", "true", "yes", "on"}


def coerce(config: dict) -> None:
    """Give every known setting its default's type, whatever form the environment gave it in."""
    for key, kind in _TYPES.items():
        value = config.get(key)
        if value is None or isinstance(value, kind):
            continue
        if kind is bool:
            config[key] = str(value).strip().lower() in _TRUE
        else:
            try:
                config[key] = kind(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"IPAAS_{key} must be a {kind.__name__}, got {value!r}") from exc

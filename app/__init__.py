"""The composition root: every shared object (store, engine, metrics) is built here, per app."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from flask import Flask

from app import logutils
from app.config import DEFAULTS, coerce
from app.engine.base import Engine
from app.metrics import Metrics
from app.engine.scheduler import Scheduler, offset_clock
from app.security.crypto import SecretBox, UndecryptableSecret
from app.security.keys import load_secret_keys
from app.security.ratelimit import TenantRateLimiter
from app.services import Services
from app.store import Store, create_store
from app.store.health import StoreHealth
from app.tracing import Tracing, provider_from_env

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)


def create_app(test_config: dict[str, Any] | None = None, *, store: Store | None = None,
               engine: Engine | None = None, tracer_provider: TracerProvider | None = None) -> Flask:
    """Build the service: config from defaults, IPAAS_* variables, then `test_config`.

    Tracing (app/tracing.py) uses `tracer_provider`, else one made from the OTEL_* variables, if set."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("IPAAS")
    app.config.from_mapping(test_config or {})
    coerce(app.config)
    # Werkzeug refuses larger bodies from Content-Length before reading them, chunked ones while reading.
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_PAYLOAD_BYTES"]
    app.json.sort_keys = False
    logutils.configure(app.config["LOG_LEVEL"])
    # The first key signs dashboard sessions; all of them are kept for decrypting stored secrets.
    app.config["SECRET_KEYS"] = load_secret_keys(app.config.get("SECRET_KEY"), app.instance_path)
    app.secret_key = app.config["SECRET_KEYS"][0]

    store = store or create_store(app.config["DATABASE_URL"], pool_size=app.config["DB_POOL_SIZE"])
    store.init_schema()
    box = SecretBox(app.config["SECRET_KEYS"])
    _upgrade_secrets(store, box)
    metrics = Metrics()
    health = StoreHealth(metrics)
    # Made here, after gunicorn's fork: an exporter's thread would not survive one.
    tracing = Tracing(tracer_provider or provider_from_env())
    tracing.instrument(app)
    if engine is None and app.config["START_ENGINE"]:
        from app.engine import create_engine

        engine = create_engine(store, app.config, metrics, tracing=tracing, health=health)
    limiter = TenantRateLimiter(store, rate=app.config["TENANT_RATE"], burst=app.config["TENANT_BURST"])
    app.extensions["ipaas"] = Services(store=store, engine=engine, metrics=metrics, config=app.config,
                                       rate_limiter=limiter, box=box, tracing=tracing, health=health)
    if engine is not None and app.config["START_ENGINE"]:
        engine.start()
        scheduler = Scheduler(store, engine, tick=app.config["SCHEDULER_TICK"],
                              clock=offset_clock(app.config["SCHEDULER_CLOCK_OFFSET"]))
        app.extensions["ipaas.scheduler"] = scheduler
        scheduler.start()

    from app import cli, ui
    from app.api import register_api
    from app.api.thin import ThinWebhooks

    register_api(app)
    ui.init_app(app)
    cli.init_app(app)
    if not tracing.enabled:
        # Webhooks answered beside Flask's request machinery; with tracing on, Flask's instrumentation
        # makes every request's span, so they go through Flask too.
        app.wsgi_app = ThinWebhooks(app, app.wsgi_app)  # type: ignore[method-assign]
    return app


def _upgrade_secrets(store: Store, box: SecretBox) -> None:
    """Encrypt the workflow secrets stored before encryption existed, and check that every stored secret
    decrypts: a start with the wrong IPAAS_SECRET_KEY fails here, before anything is written."""
    try:
        upgraded = store.rewrite_secrets(box.upgrade)
    except UndecryptableSecret as exc:
        raise RuntimeError(str(exc)) from None
    if upgraded:
        log.warning("encrypted workflow secrets stored as plaintext", extra={"data": {"count": upgraded}})


def shutdown_app(app: Flask, grace: float) -> None:
    """Stop the app's scheduler and engine (finishing or handing back its executions) and shut the store down."""
    if (scheduler := app.extensions.get("ipaas.scheduler")) is not None:
        scheduler.stop()
    services: Services = app.extensions["ipaas"]
    if services.engine is not None:
        services.engine.shutdown(grace)
    services.store.shutdown()
    services.tracing.shutdown()

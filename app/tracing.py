"""OpenTelemetry tracing: one trace per execution, from the webhook request to each outgoing request.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_TRACES_EXPORTER` (`otlp` | `console`; `none` keeps it
off) is set. Everything else comes from the standard variables, read by the SDK itself:
`OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (Resource.create), `OTEL_TRACES_SAMPLER[_ARG]`
(TracerProvider's default sampler, parent-based), `OTEL_EXPORTER_OTLP_*` (OTLPSpanExporter, over HTTP
with protobuf), `OTEL_BSP_*` (BatchSpanProcessor).

The provider is made in `create_app`, i.e. in each gunicorn worker after fork (the master never
imports `app`), and is this app's own, not the global one: tests pass theirs (with an
InMemorySpanExporter) to `create_app(tracer_provider=...)`.

The spans of an execution:
- the webhook (or run, replay) request: the official Flask instrumentation, continuing an incoming
  W3C `traceparent`;
- its traceparent is stored with the execution (`Execution.trace_context`), so every run of it, on
  any process, after a recovery or a redelivery too, joins that trace;
- `queue wait` from the execution's creation to its claim, then `execution` (its outcome in
  `ipaas.execution.status`), `attempt` per connector call, and a CLIENT span per outgoing HTTP
  request (each redirect hop), whose `traceparent` header is sent to the destination. URLs are not
  recorded (they may hold tokens, as Slack webhook URLs do): only scheme, host and port."""
from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterator, Mapping, MutableMapping
from urllib.parse import urlsplit

from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from flask import Flask
    from opentelemetry.sdk.trace import TracerProvider

    from app.models import Execution

_PROPAGATOR = TraceContextTextMapPropagator()
_FAILED = {"failed", "timed_out"}


def provider_from_env(environ: Mapping[str, str] = os.environ) -> TracerProvider | None:
    """A TracerProvider exporting as the OTEL_* variables say, or None when tracing is off."""
    exporter_name = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter_name == "none" or not (exporter_name or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()):
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if exporter_name in ("", "otlp"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    elif exporter_name == "console":
        exporter = ConsoleSpanExporter()
    else:
        raise ValueError(f"OTEL_TRACES_EXPORTER must be otlp, console or none, got {exporter_name!r}")
    # The service name defaults to the one in the logs, unless OTEL_SERVICE_NAME says otherwise.
    provider = TracerProvider(resource=Resource.create({"service.name": "ipaas-api"}).merge(Resource.create()))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1e9)


class Tracing:
    """The spans of one app; every method is a cheap no-op when `provider` is None (tracing off)."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("ipaas") if provider is not None else None

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def instrument(self, app: Flask) -> None:
        """Give every request of `app` a SERVER span (continuing an incoming traceparent)."""
        if self.provider is not None:
            from opentelemetry.instrumentation.flask import FlaskInstrumentor

            FlaskInstrumentor.instrument_app(app, tracer_provider=self.provider)

    def traceparent(self) -> str | None:
        """The current span as a W3C traceparent, to store with an execution; None when off."""
        if self._tracer is None:
            return None
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier.get("traceparent")

    @contextmanager
    def execution(self, execution: Execution, outcome: Any) -> Iterator[None]:
        """Spans for one run of `execution`, in the trace it was accepted in: its wait in the queue
        (created_at to started_at), then the run itself, which ends with `outcome.status`/`attempts`."""
        if self._tracer is None:
            yield
            return
        parent = _PROPAGATOR.extract({"traceparent": execution.trace_context}) if execution.trace_context else None
        attributes = {"ipaas.execution.id": execution.id, "ipaas.workflow.id": execution.workflow_id,
                      "ipaas.tenant.id": execution.tenant_id, "ipaas.execution.trigger": execution.trigger}
        if execution.started_at is not None:
            self._tracer.start_span("queue wait", context=parent, kind=SpanKind.CONSUMER, attributes=attributes,
                                    start_time=_ns(execution.created_at)).end(end_time=_ns(execution.started_at))
        with self._tracer.start_as_current_span("execution", context=parent, attributes=attributes) as span:
            try:
                yield
            finally:
                handed_back = getattr(outcome, "handed_back", False)
                status = "handed_back" if handed_back else getattr(outcome.status, "value", str(outcome.status))
                span.set_attribute("ipaas.execution.status", status)
                span.set_attribute("ipaas.execution.attempts", outcome.attempts)
                if status in _FAILED:
                    span.set_status(Status(StatusCode.ERROR, outcome.error or status))

    @contextmanager
    def step(self, name: str, position: int) -> Iterator[None]:
        """A span for one step of the execution (its attempts are its children)."""
        if self._tracer is None:
            yield
            return
        with self._tracer.start_as_current_span(f"step {name}", attributes={"ipaas.step.name": name,
                                                                              "ipaas.step.position": position}):
            yield

    @contextmanager
    def attempt(self, number: int) -> Iterator[None]:
        """A span for one attempt of an action (an exception raised through it is recorded)."""
        if self._tracer is None:
            yield
            return
        with self._tracer.start_as_current_span("attempt", attributes={"ipaas.attempt": number}):
            yield

    @contextmanager
    def client_request(self, method: str, url: str, headers: MutableMapping[str, str]) -> Iterator[Any]:
        """A CLIENT span for one outgoing request; adds its `traceparent` to `headers`. Yields the span
        (None when off) for `record_response`."""
        if self._tracer is None:
            yield None
            return
        parts = urlsplit(url)
        attributes = {"http.request.method": method, "url.scheme": parts.scheme,
                      "server.address": parts.hostname or "",
                      "server.port": parts.port or (443 if parts.scheme == "https" else 80)}
        with self._tracer.start_as_current_span(f"{method}", kind=SpanKind.CLIENT, attributes=attributes) as span:
            _PROPAGATOR.inject(headers)
            yield span

    @staticmethod
    def record_response(span: Any, status: int) -> None:
        if span is not None:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))

    def shutdown(self) -> None:
        """Export what is buffered and stop; at process exit."""
        if self.provider is not None:
            self.provider.shutdown()


NO_TRACING = Tracing()

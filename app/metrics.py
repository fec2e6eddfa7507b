"""Prometheus metrics, one set per app, correct across gunicorn worker processes.

Under gunicorn, gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at a fresh directory before any
worker starts: each process then writes its samples to files there and a scrape sums them
(prometheus-client multiprocess mode). Without it (tests, `flask run`) the app's own registry is used."""
from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_length = Gauge("ipaas_queue_length", "Executions waiting for a worker.",
                                  registry=r, multiprocess_mode="livesum")
        self.workers_busy = Gauge("ipaas_workers_busy", "Worker threads running an execution.",
                                  registry=r, multiprocess_mode="livesum")
        self.executions = Counter("ipaas_executions_total", "Executions that reached a terminal status.",
                                  ["status", "action_type"], registry=r)
        self.execution_duration = Histogram("ipaas_execution_duration_seconds", "Time from start to outcome.",
                                            ["action_type"], buckets=_DURATION_BUCKETS, registry=r)
        self.step_duration = Histogram("ipaas_step_duration_seconds", "Time one step ran, its retries included.",
                                       ["action_type"], buckets=_DURATION_BUCKETS, registry=r)
        self.jobs_dropped = Counter("ipaas_jobs_dropped_total", "Webhooks refused with 503: queue full.",
                                    registry=r)
        self.webhooks_received = Counter("ipaas_webhooks_received_total", "Webhook requests by answer status.",
                                         ["status"], registry=r)
        self.webhook_ack = Histogram("ipaas_webhook_ack_seconds", "Time to answer a webhook sender.",
                                     buckets=_LATENCY_BUCKETS, registry=r)
        self.retries = Counter("ipaas_action_retries_total", "Action attempts retried.", ["action_type"],
                               registry=r)
        self.circuit_state = Gauge("ipaas_circuit_state",
                                   "Circuit per destination host: 0 closed, 1 open, 2 half-open.",
                                   ["host"], registry=r, multiprocess_mode="max")
        self.backlog = Gauge("ipaas_backlog", "Executions recorded but not started, all processes together "
                             "(distributed mode).", registry=r, multiprocess_mode="livemostrecent")
        self.rate_limited = Counter("ipaas_rate_limited_total", "Webhooks refused with 429 by the tenant rate limit.",
                                    registry=r)

    def render(self) -> bytes:
        """Render every metric, summed over all worker processes when running under gunicorn."""
        return generate_latest(self._exported())

    def current(self, name: str) -> float:
        """The value /metrics exports for an unlabelled sample (a gauge such as ipaas_queue_length), 0 if none."""
        return self._exported().get_sample_value(name) or 0.0

    def _exported(self) -> CollectorRegistry:
        directory = multiprocess_dir()
        if directory is None:
            return self.registry
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return registry

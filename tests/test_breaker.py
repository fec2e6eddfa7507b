"""Circuit breakers per destination host: open after N failures, fail fast, probe when half-open."""
from __future__ import annotations

from datetime import timedelta

import pytest

from app.connectors import ActionError
from app.engine.cancel import CancelToken
from app.metrics import Metrics
from app.models import utcnow
from app.security.breaker import CircuitOpen, HostBreakers
from tests.receiver import Reply, make_client, receiver  # noqa: F401 (fixtures)


class Clock:
    """UTC now, plus however far a test has moved it."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self):
        return utcnow() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def breakers(metrics, clock) -> HostBreakers:
    return HostBreakers(metrics, fail_max=3, reset_timeout=60, clock=clock)


def gauge(metrics: Metrics, host: str) -> float | None:
    return metrics.registry.get_sample_value("ipaas_circuit_state", {"host": host})


def fail(breakers: HostBreakers, host: str, times: int) -> None:
    for _ in range(times):
        breakers.before(host)
        breakers.record(host, failed=True)


def test_breaker_opens_after_consecutive_failures(breakers, metrics):
    fail(breakers, "a.example", 2)
    assert breakers.state("a.example") == "closed"
    fail(breakers, "a.example", 1)
    assert breakers.state("a.example") == "open"
    assert gauge(metrics, "a.example") == 1
    with pytest.raises(CircuitOpen, match="circuit open for host a.example"):
        breakers.before("a.example")
    breakers.before("b.example")  # other hosts are unaffected


def test_breaker_success_resets_the_failure_count(breakers):
    fail(breakers, "a.example", 2)
    breakers.record("a.example", failed=False)  # e.g. a 404: the host answers
    fail(breakers, "a.example", 2)
    assert breakers.state("a.example") == "closed"


def test_breaker_half_open_probe_success_closes(breakers, clock, metrics):
    fail(breakers, "a.example", 3)
    clock.advance(61)
    breakers.before("a.example")  # the probe goes through
    assert breakers.state("a.example") == "half-open"
    assert gauge(metrics, "a.example") == 2
    breakers.record("a.example", failed=False)
    assert breakers.state("a.example") == "closed"
    assert gauge(metrics, "a.example") == 0


def test_breaker_half_open_probe_failure_reopens(breakers, clock):
    fail(breakers, "a.example", 3)
    clock.advance(61)
    fail(breakers, "a.example", 1)
    assert breakers.state("a.example") == "open"
    with pytest.raises(CircuitOpen):
        breakers.before("a.example")


def test_breaker_ignores_outcomes_reported_while_open(breakers):
    fail(breakers, "a.example", 3)
    breakers.record("a.example", failed=False)  # a request sent before it opened
    assert breakers.state("a.example") == "open"


def test_client_fails_fast_while_open_and_probes_after_reset(make_client, receiver, breakers, clock):
    receiver.respond("/down", Reply(503))
    client = make_client(breakers=breakers)
    for _ in range(3):
        with pytest.raises(ActionError) as caught:
            client.send("POST", receiver.url("/down"), token=CancelToken())
        assert caught.value.retryable
    with pytest.raises(ActionError, match="circuit open for host 127.0.0.1") as caught:
        client.send("POST", receiver.url("/down"), token=CancelToken())
    assert not caught.value.retryable
    assert len(receiver.requests()) == 3  # fail fast: nothing was sent

    receiver.respond("/down", Reply(200))
    clock.advance(61)
    assert client.send("POST", receiver.url("/down"), token=CancelToken()).status_code == 200
    assert breakers.state("127.0.0.1") == "closed"
    assert len(receiver.requests()) == 4


def test_client_4xx_does_not_count_as_failure(make_client, receiver, breakers):
    receiver.respond("/missing", Reply(404))
    client = make_client(breakers=breakers)
    for _ in range(5):
        with pytest.raises(ActionError):
            client.send("GET", receiver.url("/missing"), token=CancelToken())
    assert breakers.state("127.0.0.1") == "closed"


def test_breaker_with_a_short_real_reset_timeout(make_client, receiver, metrics):
    breakers = HostBreakers(metrics, fail_max=1, reset_timeout=0.2)
    receiver.respond("/flaky", Reply(500), Reply(200))
    client = make_client(breakers=breakers)
    with pytest.raises(ActionError):
        client.send("GET", receiver.url("/flaky"), token=CancelToken())
    with pytest.raises(ActionError, match="circuit open"):
        client.send("GET", receiver.url("/flaky"), token=CancelToken())
    # Wait for the reset timeout on the token's own clock (an event wait, no sleep loop).
    CancelToken().wait(0.25)
    assert client.send("GET", receiver.url("/flaky"), token=CancelToken()).status_code == 200
    assert breakers.state("127.0.0.1") == "closed"

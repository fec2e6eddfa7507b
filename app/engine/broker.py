"""The Redis side of distributed mode: the queue of execution ids (Dramatiq's RedisBroker), the cancel
channel (Redis pub/sub) and the sweeper's lock.

What this relies on, read in dramatiq 2.2's source (brokers/redis.py, brokers/redis/dispatch.lua,
worker.py, middleware/__init__.py) and its issue threads:
- At-least-once: a consumer moves the messages it fetches from the queue into its own ack set and drops
  them only when the actor has returned (ack). An actor that raises is nacked: moved to the dead-letter
  set, not run again. So the actor never raises: Runner.run is the worker boundary.
- A dead consumer's unacked messages go back to the queue only when a later command that happens to run
  maintenance (`maintenance_chance` per million commands, default 1,000) sees its heartbeat older than
  `heartbeat_timeout` (default 60 s); Bogdanp/dramatiq#527: "some time (the heartbeat timeout) has to
  pass until those messages are put back". A Redis restart or FLUSHALL loses everything. Neither is
  relied on: the store is the truth and the sweeper (engine/sweeper.py) enqueues again what waits too
  long, so the defaults are kept, and the duplicates Dramatiq's own redelivery may add are dropped at the
  claim. Nothing is ever nacked, so `dead_message_ttl` does not matter either.
- Fetching polls (there is no blocking pop): an idle consumer backs off up to `worker_timeout` ms.
- A connection error stops a consumer; it starts again 3 s later (`dramatiq_restart_delay`). An ack that
  meets a connection error is retried every 5 s until Redis answers, holding that worker thread.
- `Worker.stop(timeout)` stops the worker threads first (each finishes its message), joins them for up to
  `timeout` ms, then stops the consumers and requeues the fetched messages no thread took.
- `RedisBroker(middleware=None)` installs AgeLimit, TimeLimit, ShutdownNotifications, Callbacks,
  Pipelines and Retries. TimeLimit and ShutdownNotifications raise asynchronous exceptions inside the
  actor's thread and Retries runs it again: the Runner owns timeouts, retries and shutdown, so the broker
  is built with `middleware=[]`.
- Every enqueue gets a fresh `redis_message_id`, so enqueueing one execution twice makes two messages.
- `@dramatiq.actor` without `broker=` uses a process-global broker; here the broker is built by the
  caller (create_engine, the worker) and passed in.
"""
from __future__ import annotations

import json
import logging
import threading
from typing import Callable

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

log = logging.getLogger(__name__)

QUEUE = "ipaas-executions"
ACTOR = "run_execution"
CANCEL_CHANNEL = "ipaas:cancel"
REDIS_TIMEOUT = 2.0  # seconds: a lost Redis fails a webhook's enqueue quickly instead of hanging it


class ExecutionQueue:
    """Send execution ids to the workers; publish cancels; hold short leases."""

    def __init__(self, url: str):
        self.client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT)
        self.broker = RedisBroker(client=self.client, middleware=[])

    def send(self, execution_id: str) -> None:
        """Enqueue one execution id; redis.RedisError if Redis cannot take it."""
        self.broker.enqueue(dramatiq.Message(queue_name=QUEUE, actor_name=ACTOR, args=(execution_id,),
                                             kwargs={}, options={}))

    def ping(self) -> None:
        """Raise redis.RedisError unless Redis answers."""
        self.client.ping()

    def publish_cancel(self, execution_id: str, by: str) -> None:
        self.client.publish(CANCEL_CHANNEL, json.dumps({"execution_id": execution_id, "by": by}))

    def hold_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew the lease `name` for `ttl` seconds; False while another holder has it.

        Not a strict lock (a lease that expires between the read and the renewal may be renewed for its
        new holder): it only keeps the work it guards from being done N times over, not from twice."""
        key, ttl_ms = f"ipaas:lease:{name}", max(1, int(ttl * 1000))
        if self.client.set(key, holder, nx=True, px=ttl_ms):
            return True
        if self.client.get(key) == holder.encode():
            self.client.pexpire(key, ttl_ms)
            return True
        return False

    def declare_actor(self, fn: Callable[[str], None]) -> dramatiq.Actor:
        """Make `fn(execution_id)` the consumer of the queue (worker processes only)."""
        return dramatiq.Actor(fn, broker=self.broker, actor_name=ACTOR, queue_name=QUEUE, priority=0, options={})

    def close(self) -> None:
        self.broker.close()
        self.client.close()


class CancelListener:
    """Call `on_cancel(execution_id, by)` for each cancel published on the channel, from a daemon thread
    that resubscribes after a lost connection. Pub/sub is fire-and-forget: a cancel published while this
    is disconnected is missed, and the engine's store poll (Supervisor) delivers it instead."""

    def __init__(self, client: redis.Redis, on_cancel: Callable[[str, str], object], *, retry_delay: float = 1.0):
        self._client = client
        self._on_cancel = on_cancel
        self._retry_delay = retry_delay
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ipaas-cancel-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                with self._client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    pubsub.subscribe(CANCEL_CHANNEL)
                    failing = False
                    while not self._stop.is_set():
                        message = pubsub.get_message(timeout=0.5)
                        if message is not None:
                            self._deliver(message["data"])
            except redis.RedisError as exc:
                if not failing:  # one line per outage, not one per retry
                    log.warning("cancel channel unavailable, resubscribing", extra={"data": {"error": str(exc)}})
                failing = True
                self._stop.wait(self._retry_delay)

    def _deliver(self, data: bytes) -> None:
        try:
            cancel = json.loads(data)
            self._on_cancel(str(cancel["execution_id"]), str(cancel["by"]))
        except (ValueError, KeyError, TypeError):
            log.warning("malformed cancel message ignored", extra={"data": {"message": repr(data)[:200]}})

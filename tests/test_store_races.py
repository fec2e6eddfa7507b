"""Races every database backend must win, between real threads and real (spawned) processes on one
database: SQLite (one file) and PostgreSQL (one server database). The memory store lives in one
process, so it takes part only in the thread races."""
from __future__ import annotations

import multiprocessing
import threading
from dataclasses import replace
from datetime import timedelta

import pytest

from app.store import Store, create_store
from tests.test_store_contract import open_store, store  # noqa: F401 (store: every backend, as a fixture)
from tests.test_store_sqlite import PROCESS_TIMEOUT, T0, queued, seed_workflow


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path) -> tuple[Store, str]:
    """A store on a fresh database, and the URL that other processes open it with."""
    store = open_store(request.param, request, tmp_path)
    url = f"sqlite:///{store.path}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store.init_schema()
    yield store, url
    store.shutdown()


def run_processes(target, args_per_process: list[tuple]) -> list:
    """Start one spawned process per args tuple, released together by a barrier; return what each sends back."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(len(args_per_process)), context.Queue()
    processes = [context.Process(target=target, args=(barrier, results, *args)) for args in args_per_process]
    for process in processes:
        process.start()
    try:
        collected = [results.get(timeout=PROCESS_TIMEOUT) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=PROCESS_TIMEOUT)
    assert [process.exitcode for process in processes] == [0] * len(processes)
    results.close()
    results.join_thread()
    return collected


def in_racing_threads(count: int, call) -> list:
    """Run `call(n)` in `count` threads released together; return their results in thread order."""
    barrier, results = threading.Barrier(count), [None] * count

    def run(n: int) -> None:
        barrier.wait(timeout=PROCESS_TIMEOUT)
        results[n] = call(n)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=PROCESS_TIMEOUT)
    return results


# --- children ----------------------------------------------------------------------------------------
def create_with_keys(barrier, results, url: str, keys: list[str]) -> None:
    """Child process: create one execution per idempotency key, all in a race with the other child."""
    store = create_store(url)
    try:
        barrier.wait(timeout=PROCESS_TIMEOUT)
        results.put({key: store.create_execution(queued("wf_1", n), idempotency_key=key)[0].id
                     for n, key in enumerate(keys)})
    finally:
        store.shutdown()


def adopt_all(barrier, results, url: str, owner: str, rounds: int) -> None:
    """Child process: adopt orphans in small batches until none are left."""
    store = create_store(url)
    try:
        barrier.wait(timeout=PROCESS_TIMEOUT)
        adopted: list[str] = []
        for _ in range(rounds):
            batch = store.adopt_orphans(owner, dead_owners=["proc-dead"], limit=7)
            if not batch:
                break
            adopted += [execution.id for execution in batch]
        results.put((owner, adopted))
    finally:
        store.shutdown()


def take_one_by_one(barrier, results, url: str, tries: int) -> None:
    """Child process: take one token at a time from the shared bucket; report how many were given."""
    store = create_store(url)
    try:
        barrier.wait(timeout=PROCESS_TIMEOUT)
        results.put(sum(store.take_tokens("tn_1", want=1, rate=0.001, burst=50, now=T0)[0] for _ in range(tries)))
    finally:
        store.shutdown()


def fire_slots(barrier, results, url: str, minutes: int) -> None:
    """Child process: fire every minute's slot of the schedule in order, as a scheduler would; report the
    slots this process recorded an execution for."""
    store = create_store(url)
    try:
        barrier.wait(timeout=PROCESS_TIMEOUT)
        won = [minute for minute in range(minutes)
               if store.create_scheduled_execution(queued("wf_1", minute), slot=T0 + timedelta(minutes=minute))]
        results.put(won)
    finally:
        store.shutdown()


# --- threads -----------------------------------------------------------------------------------------
def test_racing_threads_claim_an_execution_exactly_once(store):
    seed_workflow(store)
    execution, _ = store.create_execution(queued("wf_1", 1))

    def claim(n: int):
        try:
            return store.claim_execution(execution.id, owner=f"proc-{n}", now=T0)
        finally:
            store.close()

    claims = [claimed for claimed in in_racing_threads(8, claim) if claimed is not None]
    assert len(claims) == 1
    assert store.get_execution(None, execution.id).owner == claims[0].owner


def test_racing_threads_share_one_idempotency_key(store):
    seed_workflow(store)
    outcomes = in_racing_threads(8, lambda n: store.create_execution(queued("wf_1", n), idempotency_key="evt-1"))
    assert sorted(created for _, created in outcomes) == [False] * 7 + [True]
    assert len({execution.id for execution, _ in outcomes}) == 1
    assert len(store.list_executions(None, limit=10).items) == 1


def test_racing_threads_ensure_one_tenant(store):
    tenants = in_racing_threads(8, lambda n: store.ensure_tenant("acme", tenant_id=f"tn_{n}", now=T0))
    assert len(set(tenants)) == 1


# --- processes ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_racing_processes_share_idempotency_keys(database):
    store, url = database
    seed_workflow(store)
    keys = [f"evt-{n}" for n in range(50)]
    first, second = run_processes(create_with_keys, [(url, keys), (url, keys)])
    assert first == second
    assert len(set(first.values())) == 50
    assert len(store.list_executions(None, limit=200).items) == 50


@pytest.mark.slow
def test_racing_processes_adopt_every_orphan_exactly_once(database):
    store, url = database
    workflow = seed_workflow(store)
    for n in range(200):
        store.create_execution(queued(workflow.id, n, owner="proc-dead" if n % 2 else None))
    reports = dict(run_processes(adopt_all, [(url, "proc-a", 100), (url, "proc-b", 100)]))
    adopted = reports["proc-a"] + reports["proc-b"]
    assert len(adopted) == len(set(adopted)) == 200
    for owner, ids in reports.items():
        assert {store.get_execution(None, execution_id).owner for execution_id in ids} <= {owner}


@pytest.mark.slow
def test_racing_processes_draw_from_one_token_bucket(database):
    store, url = database
    # The bucket does not exist yet: both processes race to create it, and only one full bucket is shared.
    given = run_processes(take_one_by_one, [(url, 40), (url, 40)])
    assert sum(given) == 50
    assert store.take_tokens("tn_1", want=1, rate=0.001, burst=50, now=T0)[0] == 0


@pytest.mark.slow
def test_racing_processes_record_each_schedule_slot_exactly_once(database):
    store, url = database
    workflow = seed_workflow(store)
    store.update_workflow(replace(workflow, trigger_type="schedule", schedule={"cron": "* * * * *",
                                                                            "timezone": "UTC"}))
    first, second = run_processes(fire_slots, [(url, 60), (url, 60)])
    # Each process tries every slot in order, so every slot is recorded, by one of them only.
    assert sorted(first + second) == list(range(60))
    assert len(store.list_executions(None, limit=200).items) == 60

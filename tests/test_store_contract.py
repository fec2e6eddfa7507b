"""The store contract: every backend must pass every test here (huey-style: one suite, all backends)."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from app.models import ApiKey, Execution, ExecutionStatus, Step, StepRecord, StepStatus, Tenant, User, Workflow, new_id
from app.store import DuplicateError, MemoryStore, PostgresStore, SqliteStore, Store, WorkerRecord

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
QUEUED, RUNNING, SUCCEEDED = ExecutionStatus.QUEUED, ExecutionStatus.RUNNING, ExecutionStatus.SUCCEEDED
CANCELLED, FAILED = ExecutionStatus.CANCELLED, ExecutionStatus.FAILED
NASTY_STRINGS = [
    "'; DROP TABLE workflows; --",
    "\" OR 1=1 -- ' OR ''='",
    "back\\slash %s %(name)s ? :name $1",
    "ünïcödé ✓ 😀 中文 עברית",
]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def open_store(kind: str, request, tmp_path) -> Store:
    """A fresh, empty store of `kind`: memory, sqlite (a file under tmp_path), postgres (its own database)."""
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SqliteStore(str(tmp_path / "db" / "ipaas.sqlite3"))
    return PostgresStore(request.getfixturevalue("postgres_url"), pool_size=4)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request, tmp_path) -> Store:
    backend = open_store(request.param, request, tmp_path)
    backend.init_schema()
    yield backend
    backend.shutdown()


def make_tenant(store: Store, name: str = "acme") -> tuple[Tenant, User]:
    tenant = store.ensure_tenant(name, tenant_id=new_id("tn"), now=T0)
    user = store.create_user(User(id=new_id("usr"), tenant_id=tenant.id, email=f"{new_id('u')}@x.test", created_at=T0))
    return tenant, user


def make_workflow(store: Store, tenant: Tenant, user: User, seconds: float = 0, **fields) -> Workflow:
    workflow = Workflow(
        id=new_id("wf", at(seconds)),
        tenant_id=tenant.id,
        user_id=user.id,
        name="notify",
        trigger_type="webhook",
        action_type="slack_message",
        config={"webhook_url": "https://hooks.slack.test/x", "text": "{{ payload.msg }}"},
        enabled=True,
        created_at=at(seconds),
        updated_at=at(seconds),
    )
    return store.create_workflow(replace(workflow, **fields))


def new_execution(workflow: Workflow, seconds: float = 0, **fields) -> Execution:
    execution = Execution(
        id=new_id("ex", at(seconds)),
        tenant_id=workflow.tenant_id,
        workflow_id=workflow.id,
        status=QUEUED,
        trigger="webhook",
        payload={"msg": "hi"},
        created_at=at(seconds),
    )
    return replace(execution, **fields)


def make_execution(store: Store, workflow: Workflow, seconds: float = 0, **fields) -> Execution:
    created, _ = store.create_execution(new_execution(workflow, seconds, **fields))
    return created


def make_running(store: Store, workflow: Workflow, owner: str, seconds: float = 0) -> Execution:
    execution = make_execution(store, workflow, seconds, owner=owner)
    return store.claim_execution(execution.id, owner=owner, now=at(seconds + 1))


@pytest.fixture
def acme(store):
    return make_tenant(store, "acme")


@pytest.fixture
def globex(store):
    return make_tenant(store, "globex")


@pytest.fixture
def workflow(store, acme) -> Workflow:
    return make_workflow(store, *acme)


# --- lifecycle -------------------------------------------------------------------------------------
def test_init_schema_twice_keeps_data(store, workflow):
    store.init_schema()
    store.ping()
    assert store.get_workflow(None, workflow.id) == workflow


# --- tenants, users, API keys ----------------------------------------------------------------------
def test_ensure_tenant_returns_the_existing_tenant(store):
    first = store.ensure_tenant("acme", tenant_id="tn_1", now=T0)
    again = store.ensure_tenant("acme", tenant_id="tn_2", now=at(5))
    assert again == first == Tenant(id="tn_1", name="acme", created_at=T0)


def test_ensure_tenant_with_a_taken_id_is_a_duplicate(store):
    store.ensure_tenant("acme", tenant_id="tn_1", now=T0)
    with pytest.raises(DuplicateError):
        store.ensure_tenant("globex", tenant_id="tn_1", now=T0)


def test_user_email_is_unique_case_insensitively(store, acme):
    tenant, _ = acme
    user = store.create_user(User(id="usr_1", tenant_id=tenant.id, email="Ada@Example.COM", created_at=T0))
    assert store.get_user_by_email("ada@example.com") == user
    assert store.get_user_by_email("ADA@EXAMPLE.COM").email == "Ada@Example.COM"
    assert store.get_user_by_email("bob@example.com") is None
    with pytest.raises(DuplicateError):
        store.create_user(User(id="usr_2", tenant_id=tenant.id, email="ada@example.com", created_at=T0))


def test_user_of_an_unknown_tenant_is_refused(store):
    with pytest.raises(ValueError):
        store.create_user(User(id="usr_1", tenant_id="tn_missing", email="a@x.test", created_at=T0))


def test_api_key_round_trip_and_revoke(store, acme):
    tenant, user = acme
    key = ApiKey(id="key_1", user_id=user.id, tenant_id=tenant.id, prefix="ipk_abc", key_hash="h" * 64, created_at=T0)
    assert store.add_api_key(key) == key
    assert store.get_api_key("ipk_abc") == key
    assert store.get_api_key("ipk_zzz") is None
    assert store.revoke_api_key("ipk_abc", now=at(1)) is True
    assert store.revoke_api_key("ipk_abc", now=at(2)) is False
    assert store.revoke_api_key("ipk_zzz", now=at(2)) is False
    assert store.get_api_key("ipk_abc").revoked_at == at(1)


def test_api_key_prefix_is_unique(store, acme):
    tenant, user = acme
    key = ApiKey(id="key_1", user_id=user.id, tenant_id=tenant.id, prefix="ipk_abc", key_hash="h", created_at=T0)
    store.add_api_key(key)
    with pytest.raises(DuplicateError):
        store.add_api_key(replace(key, id="key_2"))


# --- workflows -------------------------------------------------------------------------------------
def test_workflow_round_trip(store, acme):
    created = make_workflow(store, *acme, secret="s3cret", enabled=False)
    assert store.get_workflow(created.tenant_id, created.id) == created
    assert store.get_workflow(None, created.id) == created
    assert created.secret == "s3cret" and created.enabled is False


@pytest.mark.parametrize("scheme", ["auto", "standard", "github", "stripe", "slack", "shopify"])
def test_workflow_signature_scheme_round_trips(store, acme, scheme):
    created = make_workflow(store, *acme, secret="k", signature_scheme=scheme)
    assert store.get_workflow(None, created.id).signature_scheme == scheme
    assert store.list_workflows(created.tenant_id, limit=10).items[0].signature_scheme == scheme


def test_workflow_of_another_tenant_is_not_found(store, workflow, globex):
    other, _ = globex
    assert store.get_workflow(other.id, workflow.id) is None
    assert store.update_workflow(replace(workflow, tenant_id=other.id, name="stolen")) is None
    assert store.delete_workflow(other.id, workflow.id, now=at(1)) is False
    assert store.list_workflows(other.id, limit=10).items == []
    assert store.get_workflow(workflow.tenant_id, workflow.id) == workflow


def test_update_workflow_replaces_only_mutable_fields(store, workflow):
    changes = dict(name="renamed", action_type="http_request", config={"url": "https://x.test"}, enabled=False,
                   secret="new", signature_scheme="stripe", updated_at=at(60))
    updated = store.update_workflow(replace(workflow, user_id="usr_other", created_at=at(99), **changes))
    assert updated == replace(workflow, **changes)
    assert store.get_workflow(workflow.tenant_id, workflow.id) == updated


def test_deleted_workflow_is_gone_for_reads_and_writes(store, workflow):
    assert store.delete_workflow(workflow.tenant_id, workflow.id, now=at(1)) is True
    assert store.get_workflow(workflow.tenant_id, workflow.id) is None
    assert store.get_workflow(None, workflow.id) is None
    assert store.list_workflows(workflow.tenant_id, limit=10).items == []
    assert store.update_workflow(replace(workflow, name="zombie")) is None
    assert store.delete_workflow(workflow.tenant_id, workflow.id, now=at(2)) is False


def test_delete_workflow_cancels_its_active_executions(store, workflow, acme):
    queued = make_execution(store, workflow, 1)
    running = make_running(store, workflow, "proc-a", 2)
    done = make_running(store, workflow, "proc-a", 3)
    store.finish_execution(done.id, owner="proc-a", status=SUCCEEDED, attempts=1, now=at(4))
    bystander = make_execution(store, make_workflow(store, *acme, 5), 6)
    owned = make_execution(store, workflow, 7, owner="proc-a")

    assert store.delete_workflow(workflow.tenant_id, workflow.id, now=at(10)) is True

    tenant_id = workflow.tenant_id
    cancelled = store.get_execution(tenant_id, queued.id)
    assert (cancelled.status, cancelled.cancelled_by, cancelled.finished_at) == (CANCELLED, "workflow deleted", at(10))
    flagged = store.get_execution(tenant_id, running.id)
    assert (flagged.status, flagged.cancelled_by) == (RUNNING, "workflow deleted")
    flagged = store.get_execution(tenant_id, owned.id)
    assert (flagged.status, flagged.cancelled_by) == (QUEUED, "workflow deleted")
    assert store.cancel_requests("proc-a") == sorted([(running.id, "workflow deleted"), (owned.id, "workflow deleted")])
    assert store.get_execution(tenant_id, done.id).status is SUCCEEDED
    assert store.get_execution(tenant_id, bystander.id).status is QUEUED
    listed = store.list_executions(tenant_id, workflow_id=workflow.id, limit=10).items
    assert [e.id for e in listed] == [owned.id, done.id, running.id, queued.id]


# --- listing ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["workflows", "executions"])
def test_list_pages_newest_first_without_gaps(store, acme, workflow, kind):
    tenant, user = acme
    if kind == "workflows":
        store.delete_workflow(tenant.id, workflow.id, now=T0)
        created = [make_workflow(store, tenant, user, i) for i in range(5)]
        fetch = store.list_workflows
    else:
        created = [make_execution(store, workflow, i) for i in range(5)]
        fetch = store.list_executions
    expected = [item.id for item in reversed(created)]

    seen, cursor, pages = [], None, 0
    while pages < 10:
        page = fetch(tenant.id, limit=2, cursor=cursor)
        seen += [item.id for item in page.items]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == expected
    assert pages == 3
    assert fetch(tenant.id, limit=5).next_cursor is None


def test_lists_are_scoped_to_the_tenant(store, acme, globex):
    mine = make_execution(store, make_workflow(store, *acme))
    theirs = make_execution(store, make_workflow(store, *globex, 1), 1)
    assert [e.id for e in store.list_executions(acme[0].id, limit=10).items] == [mine.id]
    assert [e.id for e in store.list_executions(globex[0].id, limit=10).items] == [theirs.id]
    assert [e.id for e in store.list_executions(None, limit=10).items] == [theirs.id, mine.id]
    assert len(store.list_workflows(None, limit=10).items) == 2
    assert store.list_executions(globex[0].id, workflow_id=mine.workflow_id, limit=10).items == []


def test_list_executions_filters_by_workflow_and_status(store, acme, workflow):
    other_workflow = make_workflow(store, *acme, 1)
    queued = make_execution(store, workflow, 1)
    running = make_running(store, workflow, "proc-a", 2)
    elsewhere = make_execution(store, other_workflow, 3)
    tenant_id = workflow.tenant_id
    assert [e.id for e in store.list_executions(tenant_id, workflow_id=workflow.id, limit=10).items] == [
        running.id,
        queued.id,
    ]
    assert [e.id for e in store.list_executions(tenant_id, status=QUEUED, limit=10).items] == [elsewhere.id, queued.id]
    assert [e.id for e in store.list_executions(tenant_id, status=RUNNING, limit=10).items] == [running.id]


@pytest.mark.parametrize("limit", [0, -1])
def test_list_refuses_a_limit_below_one(store, limit):
    with pytest.raises(ValueError):
        store.list_workflows(None, limit=limit)
    with pytest.raises(ValueError):
        store.list_executions(None, limit=limit)


# --- executions ------------------------------------------------------------------------------------
def test_execution_of_another_tenant_is_not_found(store, workflow, globex):
    execution = make_execution(store, workflow)
    other = globex[0].id
    assert store.get_execution(other, execution.id) is None
    assert store.request_cancel(other, execution.id, by="user", now=at(1)) is None
    assert store.get_execution(workflow.tenant_id, execution.id) == execution
    assert store.get_execution(None, execution.id).status is QUEUED
    assert store.get_execution(None, "ex_missing") is None


def test_execution_ids_are_unique(store, workflow):
    execution = make_execution(store, workflow)
    with pytest.raises(DuplicateError):
        store.create_execution(execution)


def test_claim_moves_a_queued_execution_to_running_once(store, workflow):
    execution = make_execution(store, workflow, owner="proc-a")
    claimed = store.claim_execution(execution.id, owner="proc-a", now=at(5))
    assert (claimed.status, claimed.owner, claimed.started_at) == (RUNNING, "proc-a", at(5))
    assert store.get_execution(None, execution.id) == claimed
    assert store.claim_execution(execution.id, owner="proc-a", now=at(6)) is None
    assert store.claim_execution(execution.id, owner="proc-b", now=at(6)) is None


def test_claim_respects_ownership(store, workflow):
    owned = make_execution(store, workflow, owner="proc-a")
    unowned = make_execution(store, workflow, 1)
    assert store.claim_execution(owned.id, owner="proc-b", now=at(5)) is None
    assert store.get_execution(None, owned.id).status is QUEUED
    assert store.claim_execution(unowned.id, owner="proc-b", now=at(5)).owner == "proc-b"
    assert store.claim_execution("ex_missing", owner="proc-b", now=at(5)) is None


def test_claim_of_a_cancelled_execution_fails(store, workflow):
    execution = make_execution(store, workflow, owner="proc-a")
    store.request_cancel(workflow.tenant_id, execution.id, by="user", now=at(1))
    assert store.claim_execution(execution.id, owner="proc-a", now=at(2)) is None
    assert store.get_execution(None, execution.id).status is CANCELLED


def test_claim_finishes_a_released_execution_whose_cancel_was_requested(store, workflow):
    running = make_running(store, workflow, "proc-a")
    store.request_cancel(workflow.tenant_id, running.id, by="user", now=at(3))
    store.release_executions("proc-a")
    assert store.claim_execution(running.id, owner="proc-b", now=at(4)) is None
    ended = store.get_execution(None, running.id)
    assert (ended.status, ended.cancelled_by, ended.finished_at) == (CANCELLED, "user", at(4))


def test_finish_records_the_outcome(store, workflow):
    running = make_running(store, workflow, "proc-a")
    result = {"status_code": 200, "body": {"ok": True, "items": [1, "two"]}}
    assert store.finish_execution(running.id, owner="proc-a", status=SUCCEEDED, attempts=2, now=at(9), result=result)
    done = store.get_execution(workflow.tenant_id, running.id)
    assert (done.status, done.attempts, done.finished_at, done.result) == (SUCCEEDED, 2, at(9), result)
    assert done.error is None
    assert done.duration_ms == 8000


def test_finish_is_a_compare_and_set_on_owner_and_status(store, workflow):
    queued = make_execution(store, workflow, owner="proc-a")
    unowned = make_execution(store, workflow, 1)
    running = make_running(store, workflow, "proc-a", 2)
    assert store.finish_execution(queued.id, owner="proc-b", status=FAILED, attempts=1, now=at(5)) is False
    assert store.finish_execution(unowned.id, owner="proc-a", status=FAILED, attempts=1, now=at(5)) is False
    assert store.finish_execution(running.id, owner="proc-b", status=FAILED, attempts=1, now=at(5)) is False
    assert store.finish_execution("ex_missing", owner="proc-a", status=FAILED, attempts=1, now=at(5)) is False
    assert store.get_execution(None, queued.id).status is QUEUED
    assert store.get_execution(None, unowned.id).status is QUEUED
    assert store.get_execution(None, running.id).status is RUNNING
    assert store.finish_execution(running.id, owner="proc-a", status=FAILED, attempts=3, now=at(5), error="boom")
    assert store.finish_execution(running.id, owner="proc-a", status=SUCCEEDED, attempts=4, now=at(6)) is False
    assert store.get_execution(None, running.id).error == "boom"


def test_owner_finishes_its_queued_execution_without_a_claim(store, workflow):
    """The thread pool runs a one-step execution it recorded without claiming it (engine/runner.py)."""
    queued = make_execution(store, workflow, owner="proc-a")
    assert store.finish_execution(queued.id, owner="proc-a", status=SUCCEEDED, attempts=1, now=at(5),
                                  started_at=at(2), result={"status_code": 200})
    done = store.get_execution(workflow.tenant_id, queued.id)
    assert (done.status, done.started_at, done.finished_at, done.duration_ms) == (SUCCEEDED, at(2), at(5), 3000)
    assert store.finish_execution(queued.id, owner="proc-a", status=FAILED, attempts=2, now=at(6)) is False


def test_finish_keeps_the_started_at_of_a_claimed_execution(store, workflow):
    running = make_running(store, workflow, "proc-a")
    assert store.finish_execution(running.id, owner="proc-a", status=SUCCEEDED, attempts=1, now=at(5),
                                  started_at=at(3))
    assert store.get_execution(None, running.id).started_at == at(1)


def test_mark_running_records_the_owners_queued_executions_as_running(store, workflow):
    mine = make_execution(store, workflow, owner="proc-a")
    theirs = make_execution(store, workflow, 1, owner="proc-b")
    finished = make_execution(store, workflow, 2, owner="proc-a")
    store.finish_execution(finished.id, owner="proc-a", status=SUCCEEDED, attempts=1, now=at(3), started_at=at(2))
    started = {mine.id: at(4), theirs.id: at(4), finished.id: at(4), "ex_missing": at(4)}
    assert store.mark_running("proc-a", started) == 1
    marked = store.get_execution(None, mine.id)
    assert (marked.status, marked.started_at, marked.owner) == (RUNNING, at(4), "proc-a")
    assert store.get_execution(None, theirs.id).status is QUEUED
    assert (store.get_execution(None, finished.id).status, store.get_execution(None, finished.id).started_at) == (
        SUCCEEDED, at(2))
    assert store.mark_running("proc-a", {mine.id: at(5)}) == 0  # running already: unchanged
    assert store.get_execution(None, mine.id).started_at == at(4)
    assert store.mark_running("proc-a", {}) == 0
    assert store.finish_execution(mine.id, owner="proc-a", status=SUCCEEDED, attempts=1, now=at(6), started_at=at(5))
    assert store.get_execution(None, mine.id).started_at == at(4)


def test_finish_refuses_a_non_terminal_status(store, workflow):
    running = make_running(store, workflow, "proc-a")
    with pytest.raises(ValueError):
        store.finish_execution(running.id, owner="proc-a", status=QUEUED, attempts=1, now=at(5))


@pytest.mark.parametrize(("given", "kept"), [(None, "user"), ("timeout", "timeout")])
def test_finish_keeps_a_requested_cancel_reason_unless_given(store, workflow, given, kept):
    running = make_running(store, workflow, "proc-a")
    store.request_cancel(workflow.tenant_id, running.id, by="user", now=at(2))
    store.finish_execution(running.id, owner="proc-a", status=CANCELLED, attempts=1, now=at(3), cancelled_by=given)
    assert store.get_execution(None, running.id).cancelled_by == kept


def test_request_cancel_by_status(store, workflow):
    tenant_id = workflow.tenant_id
    queued = make_execution(store, workflow)
    running = make_running(store, workflow, "proc-a", 1)
    done = make_running(store, workflow, "proc-a", 2)
    store.finish_execution(done.id, owner="proc-a", status=SUCCEEDED, attempts=1, now=at(3))
    done = store.get_execution(tenant_id, done.id)

    owned = make_execution(store, workflow, 4, owner="proc-a")

    cancelled = store.request_cancel(tenant_id, queued.id, by="user", now=at(10))
    assert (cancelled.status, cancelled.cancelled_by, cancelled.finished_at) == (CANCELLED, "user", at(10))
    flagged = store.request_cancel(tenant_id, running.id, by="user", now=at(10))
    assert (flagged.status, flagged.cancelled_by, flagged.finished_at) == (RUNNING, "user", None)
    # Its owner may be starting it without a claim: flagged for the owner, who finishes it unsent.
    flagged = store.request_cancel(tenant_id, owned.id, by="user", now=at(10))
    assert (flagged.status, flagged.cancelled_by, flagged.finished_at) == (QUEUED, "user", None)
    assert store.request_cancel(tenant_id, done.id, by="user", now=at(10)) == done
    assert store.request_cancel(tenant_id, "ex_missing", by="user", now=at(10)) is None


def test_cancel_requests_lists_only_the_owners_flagged_active_executions(store, workflow):
    mine = make_running(store, workflow, "proc-a")
    make_running(store, workflow, "proc-a", 1)
    theirs = make_running(store, workflow, "proc-b", 2)
    mine_queued = make_execution(store, workflow, 3, owner="proc-a")
    for execution in (mine, theirs, mine_queued):
        store.request_cancel(workflow.tenant_id, execution.id, by="user", now=at(5))
    assert store.cancel_requests("proc-a") == sorted([(mine.id, "user"), (mine_queued.id, "user")])
    assert store.cancel_requests("proc-c") == []


def test_release_hands_back_the_owners_unfinished_executions(store, workflow):
    queued = make_execution(store, workflow, owner="proc-a")
    running = make_running(store, workflow, "proc-a", 1)
    done = make_running(store, workflow, "proc-a", 2)
    store.finish_execution(done.id, owner="proc-a", status=SUCCEEDED, attempts=1, now=at(3))
    theirs = make_execution(store, workflow, 4, owner="proc-b")

    assert store.release_executions("proc-a") == 2
    for execution_id in (queued.id, running.id):
        released = store.get_execution(None, execution_id)
        assert (released.status, released.owner, released.started_at) == (QUEUED, None, None)
    assert store.get_execution(None, done.id).owner == "proc-a"
    assert store.get_execution(None, theirs.id).owner == "proc-b"
    assert store.release_executions("proc-a") == 0


def test_adopt_orphans_takes_the_oldest_unowned_or_dead_owned_first(store, workflow):
    unowned = make_execution(store, workflow, 1)
    dead_running = make_running(store, workflow, "proc-dead", 2)
    make_execution(store, workflow, 3, owner="proc-alive")
    dead_queued = make_execution(store, workflow, 4, owner="proc-dead")
    finished = make_running(store, workflow, "proc-dead", 5)
    store.finish_execution(finished.id, owner="proc-dead", status=FAILED, attempts=1, now=at(6))
    newest = make_execution(store, workflow, 7)

    first = store.adopt_orphans("proc-me", dead_owners=["proc-dead"], limit=2)
    assert [e.id for e in first] == [unowned.id, dead_running.id]
    assert all((e.status, e.owner, e.started_at) == (QUEUED, "proc-me", None) for e in first)
    assert store.get_execution(None, dead_running.id) == first[1]
    rest = store.adopt_orphans("proc-me", dead_owners=["proc-dead"], limit=10)
    assert [e.id for e in rest] == [dead_queued.id, newest.id]
    assert store.adopt_orphans("proc-me", dead_owners=["proc-dead"], limit=10) == []
    assert store.get_execution(None, finished.id).status is FAILED


def test_adopt_orphans_without_dead_owners_takes_only_unowned(store, workflow):
    make_execution(store, workflow, owner="proc-a")
    unowned = make_execution(store, workflow, 1)
    assert [e.id for e in store.adopt_orphans("proc-me", dead_owners=[], limit=10)] == [unowned.id]


def test_count_queued_counts_every_queued_execution_whoever_owns_it(store, workflow):
    assert store.count_queued() == 0
    make_execution(store, workflow)
    make_execution(store, workflow, 1, owner="proc-a")
    make_running(store, workflow, "proc-a", 2)
    done = make_running(store, workflow, "proc-a", 3)
    store.finish_execution(done.id, owner="proc-a", status=SUCCEEDED, attempts=1, now=at(4))
    assert store.count_queued() == 2


def test_queued_unowned_lists_the_oldest_unowned_queued_before_the_cutoff(store, workflow):
    second = make_execution(store, workflow, 2)
    first = make_execution(store, workflow, 1)
    make_execution(store, workflow, 3, owner="proc-a")
    make_running(store, workflow, "proc-a", 4)
    released = make_running(store, workflow, "proc-dead", 5)
    store.release_executions("proc-dead")
    make_execution(store, workflow, 10)  # not before the cutoff

    assert store.queued_unowned(created_before=at(10), limit=10) == [first.id, second.id, released.id]
    assert store.queued_unowned(created_before=at(10), limit=2) == [first.id, second.id]
    assert store.queued_unowned(created_before=at(1), limit=10) == []
    assert store.get_execution(None, first.id).status is QUEUED  # a read: nothing changed


def test_queued_unowned_refuses_a_limit_below_one(store):
    with pytest.raises(ValueError):
        store.queued_unowned(created_before=T0, limit=0)


def test_purge_deletes_only_old_terminal_executions(store, workflow):
    old_done = make_running(store, workflow, "proc-a", 1)
    store.finish_execution(old_done.id, owner="proc-a", status=SUCCEEDED, attempts=1, now=at(2))
    old_queued = make_execution(store, workflow, 3)
    old_running = make_running(store, workflow, "proc-a", 4)
    new_done = make_running(store, workflow, "proc-a", 100)
    store.finish_execution(new_done.id, owner="proc-a", status=FAILED, attempts=1, now=at(101))

    assert store.purge_executions(before=at(50)) == 1
    assert store.get_execution(None, old_done.id) is None
    remaining = {e.id for e in store.list_executions(None, limit=10).items}
    assert remaining == {old_queued.id, old_running.id, new_done.id}


def test_purge_with_a_limit_deletes_the_oldest_first_in_batches(store, workflow):
    done = []
    for second in (5, 1, 3, 2, 4):
        execution = make_running(store, workflow, "proc-a", second * 10)
        store.finish_execution(execution.id, owner="proc-a", status=SUCCEEDED, attempts=1, now=at(second * 10 + 2))
        done.append((second, execution.id))
    running = make_running(store, workflow, "proc-a", 0)
    oldest = [execution_id for _, execution_id in sorted(done)]

    assert store.purge_executions(before=at(45), limit=2) == 2
    assert {e.id for e in store.list_executions(None, limit=10).items} == set(oldest[2:]) | {running.id}
    assert store.purge_executions(before=at(45), limit=2) == 2
    assert store.purge_executions(before=at(45), limit=2) == 0
    assert {e.id for e in store.list_executions(None, limit=10).items} == {oldest[4], running.id}


def test_purge_limit_below_one_is_refused(store):
    with pytest.raises(ValueError):
        store.purge_executions(before=at(0), limit=0)


def test_trace_context_round_trips_with_the_execution(store, workflow):
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    execution = make_execution(store, workflow, 1, trace_context=traceparent)

    assert store.get_execution(None, execution.id).trace_context == traceparent
    assert store.claim_execution(execution.id, owner="proc-a", now=at(2)).trace_context == traceparent
    assert make_execution(store, workflow, 3).trace_context is None


# --- workflow steps and step records ---------------------------------------------------------------
THREE_STEPS = (
    Step("lookup", "http_request", {"url": "https://crm.test/{{ payload.id }}", "method": "GET"}),
    Step("decide", "http_request", {"url": "https://rules.test/", "body": {"n": "{{ steps.lookup.body.n }}"}},
         condition="steps.lookup.status_code == 200"),
    Step("notify", "slack_message", {"webhook_url": "https://hooks.slack.test/x", "text": "hi"}),
)


def step(name: str, position: int, status: StepStatus = StepStatus.SUCCEEDED, **fields) -> StepRecord:
    return StepRecord(name, position, status, **{"attempts": 1, "started_at": at(position),
                                                 "finished_at": at(position + 0.5), **fields})


def test_workflow_steps_round_trip_and_update(store, acme):
    workflow = make_workflow(store, *acme, steps=THREE_STEPS)
    assert store.get_workflow(None, workflow.id).steps == THREE_STEPS
    assert (workflow.action_type, workflow.config) == ("http_request", THREE_STEPS[0].config)
    one = replace(workflow, steps=(Step("main", "http_request", {"url": "https://x.test/"}),), updated_at=at(9))
    assert store.update_workflow(one).steps == one.steps
    assert store.get_workflow(None, workflow.id) == one and one.plain


def test_a_plain_workflow_is_one_step_main(store, workflow):
    assert store.get_workflow(None, workflow.id).steps == (Step("main", workflow.action_type, workflow.config),)


def test_record_step_is_a_compare_and_set_on_owner_and_status(store, workflow):
    queued = make_execution(store, workflow, owner="proc-a")
    running = make_running(store, workflow, "proc-a", 1)
    lookup = step("lookup", 0, result={"status_code": 200}, output={"body": {"n": [1, "two"]}})
    assert store.record_step(queued.id, owner="proc-a", step=lookup) is False
    assert store.record_step(running.id, owner="proc-b", step=lookup) is False
    assert store.record_step("ex_missing", owner="proc-a", step=lookup) is False
    assert store.record_step(running.id, owner="proc-a", step=lookup)
    assert store.list_steps(None, [queued.id, running.id, "ex_missing"]) == {
        queued.id: [], running.id: [lookup], "ex_missing": []}


def test_record_step_replaces_by_name_and_lists_by_position(store, workflow):
    running = make_running(store, workflow, "proc-a")
    decide = step("decide", 1, StepStatus.SKIPPED, attempts=0)
    lookup = step("lookup", 0, StepStatus.FAILED, error="HTTP 503")
    for record in (decide, lookup, replace(lookup, status=StepStatus.SUCCEEDED, error=None, attempts=2)):
        assert store.record_step(running.id, owner="proc-a", step=record)
    assert store.list_steps(workflow.tenant_id, [running.id])[running.id] == [
        replace(lookup, status=StepStatus.SUCCEEDED, error=None, attempts=2), decide]


def test_finish_records_the_last_steps_only_with_the_outcome(store, workflow):
    running = make_running(store, workflow, "proc-a")
    records = [step("notify", 2, StepStatus.FAILED, error="HTTP 404"), step("after", 3, StepStatus.PENDING)]
    assert store.finish_execution(running.id, owner="proc-b", status=FAILED, attempts=1, now=at(5),
                                  steps=records) is False
    assert store.list_steps(None, [running.id])[running.id] == []
    assert store.finish_execution(running.id, owner="proc-a", status=FAILED, attempts=1, now=at(5), steps=records)
    assert store.list_steps(None, [running.id])[running.id] == records
    assert store.record_step(running.id, owner="proc-a", step=step("late", 4)) is False


def test_create_execution_records_the_steps_it_is_given(store, workflow):
    copied = [step("lookup", 0, output={"status": "succeeded", "body": "x"}), step("decide", 1)]
    execution, created = store.create_execution(new_execution(workflow), steps=copied)
    assert created and store.list_steps(None, [execution.id])[execution.id] == copied
    claimed = store.claim_execution(execution.id, owner="proc-a", now=at(1))
    assert claimed.status is RUNNING


def test_step_records_are_scoped_to_the_tenant_and_purged_with_the_execution(store, workflow, globex):
    running = make_running(store, workflow, "proc-a")
    store.finish_execution(running.id, owner="proc-a", status=SUCCEEDED, attempts=1, now=at(2),
                           steps=[step("main", 0)])
    assert store.list_steps(globex[0].id, [running.id]) == {running.id: []}
    assert store.list_steps(workflow.tenant_id, []) == {}
    assert store.purge_executions(before=at(50)) == 1
    assert store.list_steps(None, [running.id]) == {running.id: []}


# --- idempotency -----------------------------------------------------------------------------------
def test_idempotency_key_repeat_returns_the_first_execution(store, workflow):
    first, created = store.create_execution(new_execution(workflow, 0), idempotency_key="evt-1", idempotency_ttl=60)
    assert created is True
    repeat, created = store.create_execution(new_execution(workflow, 59), idempotency_key="evt-1", idempotency_ttl=60)
    assert (repeat, created) == (first, False)
    assert len(store.list_executions(None, limit=10).items) == 1


def test_find_by_idempotency_key_sees_keys_used_after_since(store, acme, workflow):
    first, _ = store.create_execution(new_execution(workflow, 10), idempotency_key="evt-1")
    assert store.find_by_idempotency_key(workflow.id, "evt-1", since=at(9)) == first
    assert store.find_by_idempotency_key(workflow.id, "evt-1", since=at(10)) is None
    assert store.find_by_idempotency_key(workflow.id, "evt-2", since=at(0)) is None
    assert store.find_by_idempotency_key(make_workflow(store, *acme, 1).id, "evt-1", since=at(0)) is None


def test_idempotency_key_expires_after_the_ttl(store, workflow):
    first, _ = store.create_execution(new_execution(workflow, 0), idempotency_key="evt-1", idempotency_ttl=60)
    second, created = store.create_execution(new_execution(workflow, 60), idempotency_key="evt-1", idempotency_ttl=60)
    assert created is True and second.id != first.id
    repeat, created = store.create_execution(new_execution(workflow, 61), idempotency_key="evt-1", idempotency_ttl=60)
    assert (repeat.id, created) == (second.id, False)
    assert len(store.list_executions(None, limit=10).items) == 2


def test_idempotency_keys_are_scoped_to_the_workflow(store, acme, workflow):
    other = make_workflow(store, *acme, 1)
    first, _ = store.create_execution(new_execution(workflow, 0), idempotency_key="evt-1")
    elsewhere, created = store.create_execution(new_execution(other, 0), idempotency_key="evt-1")
    assert created is True and elsewhere.id != first.id


def test_purged_idempotency_key_can_be_used_again(store, workflow):
    first, _ = store.create_execution(new_execution(workflow, 0), idempotency_key="evt-1")
    store.claim_execution(first.id, owner="proc-a", now=at(1))
    store.finish_execution(first.id, owner="proc-a", status=SUCCEEDED, attempts=1, now=at(2))
    assert store.purge_executions(before=at(60)) == 1
    assert store.create_execution(new_execution(workflow, 120), idempotency_key="evt-1")[1] is True


def test_executions_without_a_key_are_never_deduplicated(store, workflow):
    for _ in range(2):
        assert store.create_execution(new_execution(workflow, 0))[1] is True


# --- values survive the round trip -----------------------------------------------------------------
@pytest.mark.parametrize("text", NASTY_STRINGS)
def test_strings_round_trip_verbatim(store, text):
    tenant = store.ensure_tenant(text, tenant_id=text, now=T0)
    user = store.create_user(User(id=text, tenant_id=text, email=f"{text}@x.test", created_at=T0))
    assert store.get_user_by_email(f"{text}@x.test") == user
    workflow = make_workflow(store, tenant, user, id=text, name=text, trigger_type=text, action_type=text,
                             config={text: [text, {"nested": text}]}, secret=text)
    assert store.get_workflow(text, text) == workflow
    fields = dict(id=text, trigger=text, payload={text: text, "list": [text, 1, 2.5, None, True]},
                  headers={text: text}, query={"q": text}, owner=text, replay_of=text)
    execution = make_execution(store, workflow, **fields)
    assert store.get_execution(text, text) == execution
    claimed = store.claim_execution(text, owner=text, now=at(1))
    store.request_cancel(text, text, by=text, now=at(2))
    store.finish_execution(text, owner=text, status=FAILED, attempts=1, now=at(3), result={text: text}, error=text)
    done = store.get_execution(text, text)
    assert (done.error, done.cancelled_by, done.result) == (text, text, {text: text})
    assert done == replace(claimed, status=FAILED, attempts=1, finished_at=at(3), result={text: text}, error=text,
                           cancelled_by=text)
    assert [w.id for w in store.list_workflows(None, limit=10).items] == [text]


@pytest.mark.parametrize(
    "payload", [{"a": {"b": [1, {"c": "ü 😀"}]}}, ["x", 1], "plain text body", 42, None, {"odd": "\ud800 \x00"}]
)
def test_payloads_of_any_json_shape_round_trip(store, workflow, payload):
    execution = make_execution(store, workflow, payload=payload)
    assert store.get_execution(None, execution.id).payload == payload


def test_a_failed_write_changes_nothing(store, workflow):
    with pytest.raises(TypeError):
        store.create_execution(new_execution(workflow, payload={"not json": object()}), idempotency_key="evt-1")
    assert store.list_executions(None, limit=10).items == []
    assert store.create_execution(new_execution(workflow), idempotency_key="evt-1")[1] is True


def test_callers_cannot_mutate_stored_state(store, workflow):
    config = {"text": "hi", "blocks": [{"type": "section"}]}
    created = make_workflow(store, *make_tenant(store, "initech"), config=config)
    config["blocks"].append("mutated")
    created.config["text"] = "mutated"
    store.get_workflow(None, created.id).config["text"] = "mutated"
    assert store.get_workflow(None, created.id).config == {"text": "hi", "blocks": [{"type": "section"}]}
    execution = make_execution(store, workflow, payload={"items": [1]})
    execution.payload["items"].append(2)
    assert store.get_execution(None, execution.id).payload == {"items": [1]}


# --- process registry ------------------------------------------------------------------------------
def test_workers_register_refresh_and_leave(store):
    store.heartbeat(WorkerRecord(id="proc-b", host="h1", pid=2, heartbeat_at=T0))
    store.heartbeat(WorkerRecord(id="proc-a", host="h1", pid=1, heartbeat_at=T0))
    store.heartbeat(WorkerRecord(id="proc-b", host="h2", pid=3, heartbeat_at=at(10)))
    assert store.list_workers() == [
        WorkerRecord(id="proc-a", host="h1", pid=1, heartbeat_at=T0),
        WorkerRecord(id="proc-b", host="h2", pid=3, heartbeat_at=at(10)),
    ]
    store.remove_worker("proc-a")
    store.remove_worker("proc-unknown")
    assert [w.id for w in store.list_workers()] == ["proc-b"]


# --- rate limiting -------------------------------------------------------------------------------
def take(store, bucket="tn_1", *, want=1, rate=2.0, burst=3.0, now=T0):
    return store.take_tokens(bucket, want=want, rate=rate, burst=burst, now=now)


def test_take_tokens_allows_a_burst_then_refuses_until_refilled(store):
    assert [take(store) for _ in range(3)] == [(1, 0.0)] * 3
    assert take(store) == (0, pytest.approx(0.5))
    assert take(store, now=at(0.25)) == (0, pytest.approx(0.25))
    assert take(store, now=at(0.5)) == (1, 0.0)
    assert take(store, now=at(0.5))[0] == 0
    assert take(store, "tn_2") == (1, 0.0)


def test_take_tokens_takes_as_many_as_there_are_up_to_want(store):
    assert take(store, want=2) == (2, 0.0)
    assert take(store, want=2) == (1, 0.0)
    assert take(store, want=2) == (0, pytest.approx(0.5))
    assert take(store, want=5, now=at(1.0)) == (2, 0.0)


def test_take_tokens_refills_no_further_than_the_burst(store):
    take(store, rate=100, burst=2)
    assert take(store, want=10, rate=100, burst=2, now=at(3600)) == (2, 0.0)
    assert take(store, rate=100, burst=2, now=at(3600))[0] == 0


def test_take_tokens_never_refills_for_a_clock_going_backwards(store):
    take(store, rate=1, burst=1, now=at(10))
    assert take(store, rate=1, burst=1, now=at(5)) == (0, pytest.approx(1.0))
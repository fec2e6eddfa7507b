"""The store contract for schedules, credentials and secrets at rest: every backend passes these."""
from __future__ import annotations

from dataclasses import replace

import pytest

from app.models import Credential, Step, new_id
from app.store import Store
from tests.test_store_contract import acme, at, globex, make_tenant, make_workflow, new_execution, store  # noqa: F401

SCHEDULE = {"cron": "*/5 * * * *", "timezone": "UTC", "active_from": at(0).isoformat()}


@pytest.fixture
def scheduled(store, acme):
    return make_workflow(store, *acme, trigger_type="schedule", schedule=SCHEDULE)


def make_credential(store: Store, tenant_id: str, seconds: float = 0, **fields) -> Credential:
    credential = Credential(id=new_id("cr", at(seconds)), tenant_id=tenant_id, name="mail", type="smtp",
                            encrypted_data="token-1", created_at=at(seconds), updated_at=at(seconds))
    return store.create_credential(replace(credential, **fields))


# --- schedules ---------------------------------------------------------------------------------------
def test_scheduled_workflows_round_trip_their_schedule_and_step_credentials(store, acme):
    steps = (Step("main", "email", {"to": "a@example.com", "subject": "s", "text": "t"}, credential_id="cr_1"),)
    workflow = make_workflow(store, *acme, trigger_type="schedule", schedule=SCHEDULE, steps=steps)
    assert store.get_workflow(None, workflow.id) == workflow
    assert workflow.schedule == SCHEDULE and workflow.steps[0].credential_id == "cr_1"


def test_list_scheduled_workflows_has_only_live_enabled_scheduled_ones(store, acme, globex, scheduled):
    other = make_workflow(store, *globex, trigger_type="schedule", schedule=SCHEDULE)
    make_workflow(store, *acme)  # a webhook workflow
    make_workflow(store, *acme, trigger_type="schedule", schedule=SCHEDULE, enabled=False)
    deleted = make_workflow(store, *acme, trigger_type="schedule", schedule=SCHEDULE)
    store.delete_workflow(deleted.tenant_id, deleted.id, now=at(1))
    assert {w.id for w in store.list_scheduled_workflows()} == {scheduled.id, other.id}


def test_a_slot_is_claimed_once_with_its_execution(store, scheduled):
    first = new_execution(scheduled, trigger="schedule")
    assert store.create_scheduled_execution(first, slot=at(300)) == first
    assert store.get_execution(None, first.id) == first
    second = new_execution(scheduled, trigger="schedule")
    assert store.create_scheduled_execution(second, slot=at(300)) is None
    assert store.get_execution(None, second.id) is None


def test_a_slot_older_than_one_claimed_is_refused(store, scheduled):
    assert store.create_scheduled_execution(new_execution(scheduled), slot=at(600)) is not None
    late = new_execution(scheduled)
    assert store.create_scheduled_execution(late, slot=at(300)) is None
    assert store.get_execution(None, late.id) is None
    assert store.create_scheduled_execution(new_execution(scheduled), slot=at(900)) is not None


def test_slots_are_per_workflow(store, acme, scheduled):
    other = make_workflow(store, *acme, trigger_type="schedule", schedule=SCHEDULE)
    assert store.create_scheduled_execution(new_execution(scheduled), slot=at(300)) is not None
    assert store.create_scheduled_execution(new_execution(other), slot=at(300)) is not None


@pytest.mark.parametrize("change", ["disabled", "deleted", "webhook"])
def test_no_slot_fires_for_a_workflow_no_longer_scheduled(store, scheduled, change):
    if change == "deleted":
        store.delete_workflow(scheduled.tenant_id, scheduled.id, now=at(1))
    else:
        fields = {"enabled": False} if change == "disabled" else {"trigger_type": "webhook", "schedule": None}
        store.update_workflow(replace(scheduled, **fields))
    execution = new_execution(scheduled)
    assert store.create_scheduled_execution(execution, slot=at(300)) is None
    assert store.get_execution(None, execution.id) is None


# --- credentials -----------------------------------------------------------------------------------
def test_credentials_round_trip_and_are_tenant_scoped(store, acme, globex):
    mine = make_credential(store, acme[0].id)
    assert store.get_credential(acme[0].id, mine.id) == mine
    assert store.get_credential(globex[0].id, mine.id) is None
    assert store.update_credential(replace(mine, tenant_id=globex[0].id, name="stolen")) is None
    assert store.delete_credential(globex[0].id, mine.id) is False
    assert store.get_credential(acme[0].id, mine.id) == mine


def test_credentials_list_newest_first_in_pages(store, acme, globex):
    made = [make_credential(store, acme[0].id, seconds) for seconds in range(3)]
    make_credential(store, globex[0].id)
    first = store.list_credentials(acme[0].id, limit=2)
    assert [c.id for c in first.items] == [made[2].id, made[1].id]
    rest = store.list_credentials(acme[0].id, limit=2, cursor=first.next_cursor)
    assert [c.id for c in rest.items] == [made[0].id] and rest.next_cursor is None


def test_update_and_delete_a_credential(store, acme):
    credential = make_credential(store, acme[0].id)
    changed = replace(credential, name="renamed", type="http_basic", encrypted_data="token-2", updated_at=at(9))
    assert store.update_credential(changed) == changed
    assert store.get_credential(acme[0].id, credential.id) == changed
    assert store.delete_credential(acme[0].id, credential.id) is True
    assert store.get_credential(acme[0].id, credential.id) is None
    assert store.delete_credential(acme[0].id, credential.id) is False


# --- secrets at rest -------------------------------------------------------------------------------------
def test_rewrite_secrets_transforms_every_stored_secret(store, acme):
    workflow = make_workflow(store, *acme, secret="s-1")
    plain = make_workflow(store, *acme)
    credential = make_credential(store, acme[0].id, encrypted_data="d-1")
    assert store.rewrite_secrets(lambda value: value + "+") == 2
    assert store.get_workflow(None, workflow.id).secret == "s-1+"
    assert store.get_workflow(None, plain.id).secret is None
    assert store.get_credential(acme[0].id, credential.id).encrypted_data == "d-1+"
    assert store.rewrite_secrets(lambda value: value) == 0


def test_rewrite_secrets_changes_nothing_when_one_value_fails(store, acme):
    workflows = [make_workflow(store, *acme, secret=f"s-{n}") for n in range(3)]
    credential = make_credential(store, acme[0].id, encrypted_data="bad")

    def transform(value: str) -> str:
        if value == "bad":
            raise ValueError("cannot")
        return value + "+"

    with pytest.raises(ValueError):
        store.rewrite_secrets(transform)
    assert [store.get_workflow(None, w.id).secret for w in workflows] == ["s-0", "s-1", "s-2"]
    assert store.get_credential(acme[0].id, credential.id).encrypted_data == "bad"

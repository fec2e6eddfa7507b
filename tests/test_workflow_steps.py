"""Workflows of several steps through the API: shapes, the wave-1 form, and validation naming nested fields."""
from __future__ import annotations

import pytest

HOOK = "https://hooks.slack.com/services/T000/B000/XXXX"


def http(name: str, url: str = "https://api.example.com/x", **extra):
    return {"name": name, "action_type": "http_request", "config": {"url": url, **extra.pop("config", {})},
            **extra}


THREE = [
    http("lookup", "https://crm.example.com/users/{{ payload.user_id }}", config={"method": "GET"}),
    http("decide", "https://rules.example.com/", config={"body": {"tier": "{{ steps.lookup.body.tier }}"}},
         condition="steps.lookup.status_code == 200"),
    {"name": "notify", "action_type": "slack_message",
     "config": {"webhook_url": HOOK, "text": "{{ steps.lookup.body.name }}: {{ steps['decide'].body }}"}},
]


def post(client, account, **body):
    return client.post("/api/workflows", headers=account.headers,
                       json={"name": "chain", "trigger_type": "webhook", **body})


def test_steps_round_trip_with_null_top_level_action(client, account):
    response = post(client, account, steps=THREE)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["action_type"] is None and body["config"] is None
    assert [step["name"] for step in body["steps"]] == ["lookup", "decide", "notify"]
    assert body["steps"][1]["condition"] == "steps.lookup.status_code == 200"
    assert body["steps"][0]["credential_id"] is None
    shown = client.get(f"/api/workflows/{body['id']}", headers=account.headers).get_json()
    assert shown == body


def test_action_type_and_config_are_one_step_main(client, account):
    body = post(client, account, action_type="http_request", config={"url": "https://x.example.com/"}).get_json()
    assert body["action_type"] == "http_request" and body["config"] == {"url": "https://x.example.com/"}
    assert body["steps"] == [{"name": "main", "action_type": "http_request", "config": {"url": "https://x.example.com/"},
                              "condition": None, "credential_id": None}]


def test_a_one_step_workflow_shows_its_action_at_the_top_level(client, account):
    body = post(client, account, steps=[http("only")]).get_json()
    assert (body["action_type"], body["config"]) == ("http_request", {"url": "https://api.example.com/x"})


def test_put_of_what_get_returned_keeps_the_steps(client, account):
    body = post(client, account, steps=THREE).get_json()
    body["name"] = "renamed"
    response = client.put(f"/api/workflows/{body['id']}", headers=account.headers, json=body)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["steps"] == body["steps"] and response.get_json()["name"] == "renamed"


def test_a_wave1_client_editing_config_keeps_working(client, account):
    body = post(client, account, action_type="http_request", config={"url": "https://x.example.com/"}).get_json()
    body["config"] = {"url": "https://y.example.com/"}  # steps still shows the old config: an unchanged echo
    response = client.put(f"/api/workflows/{body['id']}", headers=account.headers, json=body)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["steps"][0]["config"] == {"url": "https://y.example.com/"}


def test_patch_steps_replaces_them_and_patch_config_edits_the_one_step(client, account):
    body = post(client, account, action_type="http_request", config={"url": "https://x.example.com/"}).get_json()
    url = f"/api/workflows/{body['id']}"
    patched = client.patch(url, headers=account.headers, json={"steps": THREE[:2]}).get_json()
    assert [step["name"] for step in patched["steps"]] == ["lookup", "decide"]
    refused = client.patch(url, headers=account.headers, json={"config": {"url": "https://z.example.com/"}})
    assert refused.status_code == 422 and refused.get_json()["error"]["field"] == "config"
    again = client.patch(url, headers=account.headers, json={"steps": [http("solo")]}).get_json()
    edited = client.patch(url, headers=account.headers, json={"config": {"url": "https://z.example.com/"}}).get_json()
    assert edited["steps"][0]["name"] == "solo" and edited["config"] == {"url": "https://z.example.com/"}
    assert again["steps"][0]["config"] == {"url": "https://api.example.com/x"}


def _with(index: int, **changes):
    steps = [dict(step) for step in THREE]
    steps[index].update(changes)
    return steps


@pytest.mark.parametrize("body, field", [
    ({"steps": []}, "steps"),
    ({"steps": [http(f"s{i}") for i in range(21)]}, "steps"),
    ({"steps": "lookup"}, "steps"),
    ({"steps": [None]}, "steps[0]"),
    ({"steps": _with(1, name="Decide")}, "steps[1].name"),
    ({"steps": _with(1, name="1st")}, "steps[1].name"),
    ({"steps": _with(1, name="a" * 65)}, "steps[1].name"),
    ({"steps": _with(1, name="has-dash")}, "steps[1].name"),
    ({"steps": _with(1, name="ok\n")}, "steps[1].name"),
    ({"steps": _with(1, name=7)}, "steps[1].name"),
    ({"steps": _with(2, name="lookup")}, "steps[2].name"),
    ({"steps": [{"name": "a", "config": {}}]}, "steps[0].action_type"),
    ({"steps": [{"name": "a", "action_type": "http_request"}]}, "steps[0].config"),
    ({"steps": [http("a", colour="blue")]}, "steps[0].colour"),
    ({"steps": _with(1, action_type="fax")}, "steps[1].action_type"),
    ({"steps": _with(1, config={"url": "ftp://x.example.com/"})}, "steps[1].config.url"),
    ({"steps": _with(1, config={"url": "https://x.example.com/", "body": {"a": ["{{ x }}", "{{ y "]}})},
     "steps[1].config.body.a[1]"),
    ({"steps": _with(1, condition="payload.amount >")}, "steps[1].condition"),
    ({"steps": _with(1, condition="{{ payload.amount }}")}, "steps[1].condition"),
    ({"steps": _with(1, condition="a b")}, "steps[1].condition"),
    ({"steps": _with(1, condition="")}, "steps[1].condition"),
    ({"steps": _with(1, condition=True)}, "steps[1].condition"),
    ({"steps": _with(1, condition="steps.notify.status_code == 200")}, "steps[1].condition"),
    ({"steps": _with(1, condition="steps.decide.status == 'succeeded'")}, "steps[1].condition"),
    ({"steps": _with(0, config={"url": "https://x.example.com/{{ steps.notify.body }}"})}, "steps[0].config.url"),
    ({"steps": _with(2, config={"webhook_url": HOOK, "text": "{{ steps['nope'].body }}"})}, "steps[2].config.text"),
    ({"steps": _with(1, credential_id="cr_123")}, "steps[1].credential_id"),
    ({"steps": THREE, "action_type": "http_request"}, "steps"),
    ({"steps": THREE, "config": {"url": "https://x.example.com/"}}, "steps"),
    ({"action_type": "http_request", "config": {"url": "https://x.example.com/{{ steps.main.body }}"}}, "config.url"),
    ({}, "action_type"),
])
def test_invalid_steps_are_422_naming_the_field(client, account, body, field):
    response = post(client, account, **body)
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"]["field"] == field
    assert field in response.get_json()["error"]["message"]
    assert client.get("/api/workflows", headers=account.headers).get_json()["items"] == []

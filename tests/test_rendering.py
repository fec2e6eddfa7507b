"""Sandboxed Jinja2 templates of workflow configs."""
from __future__ import annotations

import pytest

from app import rendering
from app.errors import ValidationFailed
from app.models import Execution, ExecutionStatus, Workflow, utcnow

NOW = utcnow()
WORKFLOW = Workflow(id="wf_1", tenant_id="tn_1", user_id="usr_1", name="Deploys", trigger_type="webhook",
                    action_type="http_request", config={}, enabled=True, created_at=NOW, updated_at=NOW)
EXECUTION = Execution(id="ex_1", tenant_id="tn_1", workflow_id="wf_1", status=ExecutionStatus.RUNNING,
                      trigger="webhook", payload={"user": {"name": "ada"}, "n": 3}, created_at=NOW,
                      headers={"X-GitHub-Event": "push"}, query={"env": "prod"})
CONTEXT = rendering.context_for(EXECUTION, WORKFLOW)


@pytest.mark.parametrize("source, expected", [
    ("{{ payload.user.name }}", "ada"),
    ('{{ headers["x-github-event"] }}', "push"),
    ("{{ query.env }}/{{ workflow.name }}/{{ workflow.id }}/{{ execution.id }}/{{ execution.trigger }}",
     "prod/Deploys/wf_1/ex_1/webhook"),
    ("{{ payload.n * 2 }}", "6"),
    ("{{ payload | tojson }}", '{"n": 3, "user": {"name": "ada"}}'),
    ("no template here {", "no template here {"),
    ("<b>{{ payload.user.name }}</b>", "<b>ada</b>"),  # autoescape off: configs are not HTML
])
def test_render_fills_in_the_context(source, expected):
    assert rendering.render(source, CONTEXT) == expected


@pytest.mark.parametrize("source", ["{{ payload.missing }}", "{{ payload.user.missing.deeper }}",
                                    "{{ nothing }}", "{{ headers.absent }}"])
def test_render_undefined_values_as_empty(source):
    assert rendering.render(source, CONTEXT) == ""


def test_render_exposes_execution_created_at_as_rfc3339():
    assert rendering.render("{{ execution.created_at }}", CONTEXT).endswith("Z")


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ payload.__class__.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ payload.user.name.format.__globals__ }}",
])
def test_render_never_exposes_python_internals(source):
    try:
        text = rendering.render(source, CONTEXT)
    except rendering.RenderError as error:
        assert "cannot render" in str(error)
    else:
        assert "class" not in text and "module" not in text


@pytest.mark.parametrize("source, message", [
    ("{{ 1 / 0 }}", "ZeroDivisionError"),
    ("{{ 'x' * 10000000 }}", "too large"),
    ("{{ 10 ** 100000 }}", "too large"),
    ("{{ payload.n + 'a' }}", "cannot render config.text: TypeError"),
])
def test_render_failure_names_the_field(source, message):
    with pytest.raises(rendering.RenderError, match=message):
        rendering.render(source, CONTEXT, "config.text")


def test_check_reports_syntax_errors_with_field_and_line():
    with pytest.raises(ValidationFailed, match="line 2") as caught:
        rendering.check("ok\n{{ payload.user.name ", "config.body.user")
    assert caught.value.field == "config.body.user"


def test_check_accepts_plain_strings_and_valid_templates():
    rendering.check("plain")
    rendering.check("{% if payload.ok %}yes{% endif %}")


def test_check_all_names_the_path_of_a_nested_bad_template():
    config = {"url": "https://x.example", "body": {"items": [{"text": "fine"}, {"text": "{{ oops"}]}}
    with pytest.raises(ValidationFailed) as caught:
        rendering.check_all(config)
    assert caught.value.field == "config.body.items[1].text"


def test_render_all_renders_every_string_leaf_and_keeps_other_values():
    config = {"body": {"user": "{{ payload.user.name }}", "n": 3, "flags": [True, "{{ query.env }}"]}, "x": None}
    assert rendering.render_all(config, CONTEXT) == {"body": {"user": "ada", "n": 3, "flags": [True, "prod"]},
                                                     "x": None}


def test_templates_are_compiled_once_per_source():
    source = "{{ payload.user.name }} compiled once"
    assert rendering._compile(source) is rendering._compile(source)


def _context(payload):
    return rendering.context_for(Execution(id="ex_2", tenant_id="tn_1", workflow_id="wf_1",
                                           status=ExecutionStatus.RUNNING, trigger="webhook", payload=payload,
                                           created_at=NOW), WORKFLOW)


KEYED = {"items": ["a", "b"], "keys": {"k": 1}, "values": [3], "get": "got", "update": False, "copy": None,
         "pop": 0}


@pytest.mark.parametrize("source, expected", [
    ("{{ payload.items[0] }}", "a"),
    ("{{ payload.items }}", '["a", "b"]'),
    ("{% for item in payload.items %}{{ item }};{% endfor %}", "a;b;"),
    ("{{ payload.keys.k }}", "1"),
    ("{{ payload.values | first }}", "3"),
    ("{{ payload.get }}", "got"),
    ("{{ payload.update }}", "false"),
    ("{{ payload.copy }}", "null"),
    ("{{ payload.pop }}", "0"),
    ("{{ payload.items | length }}", "2"),
])
def test_render_payload_keys_win_over_dict_methods(source, expected):
    assert rendering.render(source, _context(KEYED)) == expected


@pytest.mark.parametrize("source, expected", [
    ("{% for k, v in payload.items() %}{{ k }}={{ v }};{% endfor %}", "a=1;"),  # no key: the method
    ("{{ payload.items }}", ""),  # a method renders as nothing, like a missing key
    ("{{ payload.keys }}{{ payload.get }}{{ payload.a.bit_length }}", ""),
    ("{{ payload.get('a') }}", "1"),
])
def test_render_methods_stay_callable_and_never_render_a_repr(source, expected):
    assert rendering.render(source, _context({"a": 1})) == expected


@pytest.mark.parametrize("payload, source, expected", [
    ({"active": True, "note": None}, "{{ payload }}", '{"active": true, "note": null}'),
    ({"active": True}, "{{ payload.active }}", "true"),
    ({"note": None}, "{{ payload.note }}", "null"),
    ({"tags": ["a", "é"]}, "{{ payload.tags }}", '["a", "é"]'),
    ({"user": {"id": 1, "ok": False}}, "user={{ payload.user }}", 'user={"id": 1, "ok": false}'),
    ({"n": 1.5, "i": 7}, "{{ payload.n }} {{ payload.i }}", "1.5 7"),
    ({"s": "text"}, "{{ payload.s }}", "text"),
    ({"xs": [{"a": 1}, {"a": 2}]}, "{{ payload.xs | map(attribute='a') }}", "[1, 2]"),
    ({"d": {"b": 1, "a": 2}}, "{{ payload.d | dictsort }}", '[["a", 2], ["b", 1]]'),
])
def test_render_json_values_render_as_json(payload, source, expected):
    assert rendering.render(source, _context(payload)) == expected


def test_render_a_value_with_no_text_form_fails_naming_the_field():
    with pytest.raises(rendering.RenderError, match="config.body.*Cycler value has no text form"):
        rendering.render("{{ cycler(1, 2) }}", CONTEXT, "config.body")

"""Templates in workflow configs: Jinja2 in a sandbox, compiled once per distinct source text.

Undefined values render as an empty string, chains included (`payload.user.name` when the payload
has no `user`): webhook payloads vary, and a missing optional field should not fail the action.
Anything else that goes wrong while rendering (a filter applied to the wrong type, a sandbox
violation, a division by zero, an oversized result) raises RenderError, which fails the execution
with a message that names the config field. The sandbox hides Python internals (`__class__` and
friends render as undefined) and caps the size of `*` and `**` results.

Payloads are JSON, so templates read them as JSON: `payload.items` is the key `items` when there is
one (Jinja would give the dict method first), and a value rendered on its own renders as JSON
(`{"a": true}`, `[1, 2]`, `true`, `null`), never as a Python repr; a method renders empty, like a
missing key."""
from __future__ import annotations

import functools
import json
import operator
from collections.abc import Iterator
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.parser import Parser
from jinja2.sandbox import SandboxedEnvironment

from app.errors import ValidationFailed
from app.models import Execution, Workflow, isoformat

MAX_OUTPUT = 1024 * 1024  # characters one template may produce
MAX_EXPONENT = 1000
_MARKERS = ("{{", "{%", "{#")


class RenderError(Exception):
    """A template failed while rendering; the message names the config field."""


class _Environment(SandboxedEnvironment):
    """The sandbox, with `*` and `**` unable to build huge values."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        if op == "**" and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent {right} is too large")
        if op == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and len(seq) * times > MAX_OUTPUT:
                    raise SecurityError("repeated value is too large")
        return operator.pow(left, right) if op == "**" else operator.mul(left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        """`payload.items` is the payload's key `items` if it has one, before the dict method."""
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


def _as_text(value: Any) -> Any:
    """What `{{ value }}` shows: strings and numbers as themselves, JSON values as JSON, a method as
    nothing (what a missing key shows); TypeError for an object that has no JSON form."""
    if isinstance(value, (str, Undefined)) or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if value is None or isinstance(value, (bool, dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=_unrenderable)
    if callable(value):
        return ""
    if isinstance(value, (range, set, frozenset, Iterator)):  # map, select and other filters give generators
        return json.dumps(list(value), ensure_ascii=False, default=_unrenderable)
    return _unrenderable(value)


def _unrenderable(value: Any) -> Any:
    raise TypeError(f"a {type(value).__name__} value has no text form")


_ENV = _Environment(autoescape=False, undefined=ChainableUndefined, keep_trailing_newline=True, finalize=_as_text)


@functools.lru_cache(maxsize=1024)
def _compile(source: str) -> Template:
    return _ENV.from_string(source)


def is_template(source: str) -> bool:
    """Tell whether `source` holds any template syntax (plain strings skip Jinja entirely)."""
    return any(marker in source for marker in _MARKERS)


def check(source: str, field: str = "template") -> None:
    """Raise ValidationFailed naming `field` and the line if `source` is not a valid template."""
    if not is_template(source):
        return
    try:
        _compile(source)
    except TemplateSyntaxError as exc:
        raise ValidationFailed(f"{field}: template syntax error on line {exc.lineno}: {exc.message}",
                               field=field) from None


def render(source: str, context: dict[str, Any], field: str = "template") -> str:
    """Render one template string; raise RenderError naming `field` if it fails."""
    if not is_template(source):
        return source
    try:
        text = _compile(source).render(context)
    # Rendering runs user code: any failure is the template's fault, reported as one typed error.
    except Exception as exc:
        raise RenderError(f"cannot render {field}: {type(exc).__name__}: {exc}") from exc
    if len(text) > MAX_OUTPUT:
        raise RenderError(f"cannot render {field}: result is longer than {MAX_OUTPUT} characters")
    return text


def strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Yield (field path, string) for every string leaf of a JSON value: config.body.user, config.blocks[0]."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings(item, f"{path}[{index}]")


def check_all(value: Any, path: str = "config") -> None:
    """Check every string leaf of a JSON value as a template."""
    for field, source in strings(value, path):
        check(source, field)


def render_all(value: Any, context: dict[str, Any], path: str = "config") -> Any:
    """Return a copy of a JSON value with every string leaf rendered."""
    if isinstance(value, str):
        return render(value, context, path)
    if isinstance(value, dict):
        return {key: render_all(item, context, f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [render_all(item, context, f"{path}[{index}]") for index, item in enumerate(value)]
    return value


def context_for(execution: Execution, workflow: Workflow) -> dict[str, Any]:
    """Return the variables templates see; header names are lower-case, as in headers["x-github-event"]."""
    return {
        "payload": execution.payload,
        "headers": {name.lower(): value for name, value in execution.headers.items()},
        "query": dict(execution.query),
        "workflow": {"id": workflow.id, "name": workflow.name},
        "execution": {"id": execution.id, "trigger": execution.trigger,
                      "created_at": isoformat(execution.created_at)},
    }


# --- step conditions and references ----------------------------------------------------------------
def _expression_tree(source: str) -> nodes.Expr:
    """Parse a Jinja2 expression (no braces) as Environment.compile_expression does."""
    parser = Parser(_ENV, source, state="variable")
    tree = parser.parse_expression()
    if not parser.stream.eos:
        raise TemplateSyntaxError("chunk after expression", parser.stream.current.lineno, None, None)
    return tree


@functools.lru_cache(maxsize=1024)
def _condition(source: str) -> Any:
    return _ENV.compile_expression(source, undefined_to_none=True)


def check_condition(source: str, field: str) -> None:
    """Raise ValidationFailed naming `field` unless `source` is one valid Jinja2 expression."""
    try:
        _expression_tree(source)
        _condition(source)
    except TemplateSyntaxError as exc:
        raise ValidationFailed(f"{field}: expression syntax error: {exc.message}", field=field) from None


def condition_holds(source: str, context: dict[str, Any], field: str) -> bool:
    """Evaluate a step's condition in the sandbox: False if it is false or undefined (a comparison with
    an undefined value included); RenderError naming `field` for any other failure."""
    try:
        return bool(_condition(source)(**context))
    except UndefinedError:
        return False
    # Evaluating runs user code: any failure is the condition's fault, reported as one typed error.
    except Exception as exc:
        raise RenderError(f"cannot evaluate {field}: {type(exc).__name__}: {exc}") from exc


def referenced_steps(source: str, *, expression: bool = False) -> set[str]:
    """Names of the steps a template (or, with `expression`, a condition) refers to as `steps.NAME` or
    `steps["NAME"]`, found in Jinja2's syntax tree; the source must be valid (checked before)."""
    if not expression and not is_template(source):
        return set()
    tree = _expression_tree(source) if expression else _ENV.parse(source)
    names = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node
        if not (isinstance(target, nodes.Name) and target.name == "steps" and target.ctx == "load"):
            continue
        if isinstance(node, nodes.Getattr):
            names.add(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            names.add(node.arg.value)
    return names

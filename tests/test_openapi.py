"""The OpenAPI document describes exactly the routes the app serves."""
from __future__ import annotations

import re

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def app_operations(app) -> set[tuple[str, str]]:
    operations = set()
    for rule in app.url_map.iter_rules():
        # The dashboard's HTML pages (blueprint "ui") are for browsers, not API clients: README documents them.
        if rule.endpoint == "static" or rule.endpoint.startswith("ui."):
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        operations |= {(path, method.lower()) for method in rule.methods - IGNORED_METHODS}
    return operations


def test_document_is_openapi_3_1(client):
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1") and doc["info"]["title"] == "ipaas"


def test_every_route_is_documented_and_every_documented_route_exists(app, client):
    doc = client.get("/openapi.json").get_json()
    documented = {(path, method) for path, item in doc["paths"].items() for method in item if method != "parameters"}
    assert app_operations(app) == documented


def test_authenticated_operations_declare_bearer_auth(client):
    doc = client.get("/openapi.json").get_json()
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            needs_key = path.startswith(("/api/workflows", "/api/executions", "/api/credentials"))
            assert (operation.get("security") == [{"bearerAuth": []}]) is needs_key, (path, method)

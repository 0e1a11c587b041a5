"""Keyhouse's own OpenAPI document matches the official one for every implemented operation,
and every ``/v1`` operation declares the permission it needs."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from keyhouse.api.route_table import api_routes
from keyhouse.docs import requirements

# Documented Keyhouse extensions (README, "Compatibility").
# whoami (the newer spec) and the Query API (served on the query host, outside /v1).
_SERVICE = "/v1/organizations/{organizationId}/services/{serviceId}"
# Query API endpoints and saved queries come from the newer spec (Beta), not the vendored one.
NEWER_SPEC_OPERATIONS = {
    (method, f"{_SERVICE}/{path}")
    for collection, item in (
        ("query-api-endpoints", "{endpointId}"),
        ("saved-queries", "{queryId}"),
    )
    for path, methods in (
        (collection, ("get", "post")),
        (f"{collection}/{item}", ("get", "put", "delete")),
    )
    for method in methods
}
EXTRA_OPERATIONS = {
    ("get", "/v1/whoami"),
    # Prometheus HTTP service discovery (the newer spec; a bare list, as Prometheus reads it).
    ("get", "/v1/organizations/{organizationId}/prometheus/discovery"),
    ("post", "/service/{serviceId}/run"),
    ("get", "/run/{endpointId}"),
    ("post", "/run/{endpointId}"),
    *NEWER_SPEC_OPERATIONS,
}
EXTRA_PARAMETERS = {
    ("get", "/v1/organizations/{organizationId}/keys"): {"limit", "cursor"},
    ("get", "/v1/organizations/{organizationId}/activities"): {"extensions"},
    ("get", "/v1/organizations/{organizationId}/activities/{activityId}"): {"extensions"},
}
# Keyhouse extensions, documented in the README.
EXTRA_RESULT_FIELDS = {
    "ServicePostRequest": {"keyhouseAttach"},
    "ApiKey": {"createdBy"},
    "Invitation": {"acceptUrl"},
    "Activity": {"details"},
    "UsageCostRecord": {"keyhouseUsage"},
}


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = spec["components"]["schemas"][name]
    if "anyOf" in schema:  # Optional[X] renders as anyOf [X, null]
        options = [s for s in schema["anyOf"] if s.get("type") != "null"]
        if len(options) == 1:
            return _resolve(spec, options[0])
    return schema


def _name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref") or schema.get("items", {}).get("$ref")
    return ref.rsplit("/", 1)[1] if ref else None


def _compare_properties(
    ours_spec: dict[str, Any],
    ours: dict[str, Any],
    official_spec: dict[str, Any],
    official: dict[str, Any],
    where: str,
    *,
    depth: int = 0,
) -> None:
    allowed_extra = EXTRA_RESULT_FIELDS.get(_name(ours) or "", set())
    ours, official = _resolve(ours_spec, ours), _resolve(official_spec, official)
    if official.get("type") == "array" or ours.get("type") == "array":
        assert ours.get("type") == official.get("type") == "array", where
        _compare_properties(
            ours_spec,
            ours["items"],
            official_spec,
            official["items"],
            where + "[]",
            depth=depth,
        )
        return
    if "enum" in official:
        assert set(ours.get("enum", official["enum"])) <= set(official["enum"]), where
    official_props = official.get("properties", {})
    our_props = ours.get("properties", {})
    if not official_props:
        return
    missing = set(official_props) - set(our_props)
    extra = set(our_props) - set(official_props) - allowed_extra
    assert not extra, f"{where}: fields not in the official schema: {sorted(extra)}"
    if depth == 0:
        # Top-level wire models carry every official field (nested ones may be partial).
        assert not missing, f"{where}: official fields missing: {sorted(missing)}"
    for field in set(official_props) & set(our_props):
        if depth < 3:
            _compare_properties(
                ours_spec,
                our_props[field],
                official_spec,
                official_props[field],
                f"{where}.{field}",
                depth=depth + 1,
            )


def implemented_official(ours: dict[str, Any], official: dict[str, Any]) -> set[tuple[str, str]]:
    """The official operations (method, path) that Keyhouse's OpenAPI document serves."""
    return {
        (method, path)
        for path, methods in ours["paths"].items()
        for method in methods
        if method in official["paths"].get(path, {})
    }


@pytest.mark.one_database
def test_document_is_served_at_v1_and_openapi_json(client: TestClient) -> None:
    first = client.get("/v1").json()
    assert first == client.get("/v1/openapi.json").json()
    assert first["components"]["securitySchemes"]["basicAuth"]["scheme"] == "basic"


@pytest.mark.one_database
def test_operations_match_the_official_spec(
    client: TestClient, official_spec: dict[str, Any]
) -> None:
    ours = client.get("/v1/openapi.json").json()
    checked = 0
    for path, methods in ours["paths"].items():
        for method, operation in methods.items():
            if (method, path) in EXTRA_OPERATIONS:
                continue
            official = official_spec["paths"].get(path, {}).get(method)
            assert official is not None, f"{method.upper()} {path} is not an official operation"
            assert operation["operationId"] == official["operationId"]
            where = f"{method.upper()} {path}"
            params = {p["name"] for p in operation.get("parameters", [])}
            official_params = {p["name"] for p in official.get("parameters", [])}
            extra_params = params - official_params - EXTRA_PARAMETERS.get((method, path), set())
            assert not extra_params, f"{where}: {extra_params}"
            assert official_params <= params, f"{where}: missing {official_params - params}"
            if "requestBody" in official:
                body = operation["requestBody"]["content"]["application/json"]["schema"]
                official_body = official["requestBody"]["content"]["application/json"]["schema"]
                _compare_properties(ours, body, official_spec, official_body, where + " body")
            official_content = official["responses"]["200"]["content"]
            if "application/json" not in official_content:  # Prometheus' text, for one
                assert set(operation["responses"]["200"]["content"]) == set(official_content)
                checked += 1
                continue
            result = _resolve(
                ours, operation["responses"]["200"]["content"]["application/json"]["schema"]
            )
            official_result = official["responses"]["200"]["content"]["application/json"]["schema"]
            if "result" in official_result["properties"]:
                _compare_properties(
                    ours,
                    result["properties"]["result"],
                    official_spec,
                    official_result["properties"]["result"],
                    where + " result",
                )
            else:
                assert "result" not in result["properties"], where
            checked += 1
    # Every operation is checked but Keyhouse's own, and the official ones are all there.
    assert checked == len(implemented_official(ours, official_spec)) > 0


@pytest.mark.one_database
def test_every_v1_operation_declares_its_permission(
    client: TestClient, official_spec: dict[str, Any]
) -> None:
    public = {"/v1", "/v1/openapi.json"}
    routes = [
        (path, route)
        for path, route in api_routes(client.app.routes)  # type: ignore[attr-defined]
        if path.startswith("/v1") and path not in public
    ]
    # The official operations, and Keyhouse's own under /v1 (whoami, the newer spec's
    # endpoints and saved queries).
    ours = client.get("/v1/openapi.json").json()
    own = {(method, path) for method, path in EXTRA_OPERATIONS if path.startswith("/v1")}
    served = {(m.lower(), path) for path, route in routes for m in route.methods or ()}
    assert served == implemented_official(ours, official_spec) | own
    for path, route in routes:
        assert requirements(route.dependant), f"{route.methods} {path} declares no permission"

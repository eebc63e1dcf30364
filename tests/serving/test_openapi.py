"""The API contract: /openapi.json describes every route the app has (and no other), and
schemathesis fuzzes the running service against it: no 5xx, every response as the contract says."""

from __future__ import annotations

import re

import pytest
import schemathesis
from conftest import SERVING_MODEL, running_service
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.integration
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_the_contract_lists_exactly_the_apps_routes(app, client):
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    served = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert documented == served


def test_the_live_service_keeps_its_contract(served_model):
    """Every operation of the contract, fed what schemathesis makes of it (valid and not), against the
    service as deployed. (schemathesis' pytest plugin does not run under this pytest: its strategies,
    driven by Hypothesis directly, are the same cases.)"""
    with running_service({"PNEUMO_MODEL_NAME": SERVING_MODEL}, "/ready") as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")  # the base URL: the service's
        operations = [result.ok() for result in schema.get_all_operations()]
        labels = {operation.label for operation in operations}  # (it skips the document's own URL)
        assert {"POST /predict", "POST /feedback", "GET /ready", "GET /reports/{key}"} <= labels
        for operation in operations:
            statuses = _fuzz(operation)
            assert statuses, f"{operation.label}: no case was sent"
            assert max(statuses) < 500, (operation.label, statuses)


def _fuzz(operation) -> list[int]:
    """Run up to 25 generated cases of ``operation``, each validated by :data:`CHECKS`; their statuses."""
    statuses: list[int] = []

    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(case):
        statuses.append(case.call_and_validate(checks=CHECKS, timeout=30).status_code)

    fuzz()
    return statuses

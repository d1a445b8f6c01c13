"""Every operation of the HTTP API fuzzed against its own OpenAPI document (schemathesis, bounded
examples), on each database: no response of 500 or above, none the document does not describe
(status code, content type, body). Requests go to the app in process (Flask's test client)."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core import NOT_SET

from core.auth import tokens as api_tokens
from core.priority import DEFAULT_CATEGORIES
from dashboard.app import create_app
from dashboard.openapi import openapi_document
from tests.support.constants import ROLE_USERS

pytestmark = pytest.mark.timeout(300)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

schema = schemathesis.openapi.from_dict(openapi_document(DEFAULT_CATEGORIES))


@pytest.fixture
def api_client(settings, runtime):
    runtime.service.dispatch_task("demo.echo")  # something to read
    token = api_tokens.system_create_token(runtime.db, ROLE_USERS["admin"], "fuzz").secret
    client = create_app(settings, runtime).server.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def test_fuz000_the_served_document_is_the_one_fuzzed(api_client):
    assert api_client.get("/api/v1/openapi.json").get_json() == openapi_document(DEFAULT_CATEGORIES)


@schema.parametrize()
@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuz001_every_api_operation_answers_as_its_document_says(case, api_client):
    if case.body is NOT_SET:
        body = {}
    else:
        data = case.body if isinstance(case.body, bytes) else json.dumps(case.body)
        body = {"data": data, "content_type": case.media_type or "application/json"}
    response = api_client.open(
        case.formatted_path,
        method=case.method,
        query_string=case.query or None,
        headers={k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"},
        **body,
    )
    case.validate_response(response, checks=CHECKS)

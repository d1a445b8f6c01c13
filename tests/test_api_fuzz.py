"""Every operation of the HTTP API fuzzed against its own OpenAPI document (schemathesis, bounded
examples), on each database: no response of 500 or above, none the document does not describe
(status code, content type, body)."""

from __future__ import annotations

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

from core.auth import tokens as api_tokens
from dashboard.app import create_app
from tests.support.constants import ROLE_USERS

pytestmark = pytest.mark.timeout(300)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def api_app(settings, runtime):
    runtime.service.dispatch_task("demo.echo")  # something to read
    return create_app(settings, runtime)


@pytest.fixture
def api_schema(api_app):
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", api_app.server)


@pytest.fixture
def admin_token(runtime) -> str:
    return api_tokens.system_create_token(runtime.db, ROLE_USERS["admin"], "fuzz").secret


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuz001_every_api_operation_answers_as_its_document_says(case, admin_token):
    case.call_and_validate(headers={"Authorization": f"Bearer {admin_token}"}, checks=CHECKS)

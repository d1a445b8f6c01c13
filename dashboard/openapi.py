"""The OpenAPI 3.0 document of the HTTP API, served at /api/v1/openapi.json (no token needed: it
says nothing about tasks). `make test` fuzzes every operation against it with schemathesis
(tests/test_api_fuzz.py): no response of 500 or above, none that the document does not describe.
docs/api.md is the prose version."""

from __future__ import annotations

from typing import Any

from core.priority import BUCKETS_IN_ORDER, PHASES
from core.tasks.reads import DEFAULT_LIMIT, MAX_OFFSET, MAX_PAGE, MAX_TEXT
from core.tasks.rows import MAX_BATCH, MAX_REASON_LENGTH

STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"]
_ERROR = {"$ref": "#/components/schemas/Error"}
_ERRORS = {
    "400": "the request cannot be read: not JSON, not an object, a bad query parameter",
    "401": "no token, or a token that does not work",
    "403": "the token's user may not do this",
    "404": "no such task",
    "409": "the task is in the wrong state, the target would not raise it, or someone else changed it first",
    "413": "the body is larger than 4 MiB",
    "422": "well-formed but refused: an unknown task name, an out-of-range value, an unknown field",
    "429": "too many requests: without valid credentials from one address, or reads at once by one user",
    "503": "the database or the broker is unavailable, or a read ran past its time limit",
}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _responses(ok_status: str, ok_schema: dict[str, Any], description: str, *errors: str) -> dict[str, Any]:
    responses: dict[str, Any] = {
        ok_status: {"description": description, "content": {"application/json": {"schema": ok_schema}}}
    }
    for status in ("401", "429", *errors):
        responses[status] = {"description": _ERRORS[status], "content": {"application/json": {"schema": _ERROR}}}
    return responses


_TIME = {"type": "string", "format": "date-time"}
_TASK_ID = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 64},
    "description": "the task's id (32 hex characters)",
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "one line: what is wrong"}},
    },
    "Me": {
        "type": "object",
        "required": ["username", "role", "permissions"],
        "properties": {
            "username": {"type": "string"},
            "role": {"type": "string"},
            "permissions": {"type": "array", "items": {"type": "string"}},
        },
    },
    "DispatchTask": {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1, "description": "a registered task name"},
            "args": {"type": "object", "description": "JSON object, at most 64 KiB, nested at most 32 deep"},
            "priority": {"type": "integer", "minimum": 0, "maximum": 10, "default": 5},
            "category": {"type": "string"},
            "phase": {"type": "string", "enum": list(PHASES)},
            "correlation_id": {"type": "string", "minLength": 1, "maxLength": 64},
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100},
        },
    },
    "DispatchBatch": {
        "type": "object",
        "required": ["tasks"],
        "additionalProperties": False,
        "properties": {
            "tasks": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH,
                "items": {"$ref": "#/components/schemas/DispatchTask"},
            }
        },
    },
    "Dispatched": {
        "type": "object",
        "required": ["ids", "publish_pending"],
        "properties": {
            "ids": {"type": "array", "items": {"type": "string"}},
            "publish_pending": {"type": "boolean"},
        },
    },
    "Upgrade": {
        "type": "object",
        "required": ["action", "reason"],
        "additionalProperties": False,
        "properties": {
            "action": {"type": "string", "enum": ["prioritize", "urgent", "critical"]},
            "reason": {"type": "string", "minLength": 1, "maxLength": MAX_REASON_LENGTH},
        },
    },
    "HistoryEntry": {
        "type": "object",
        "required": [
            "changed_at",
            "from_priority",
            "to_priority",
            "from_bucket",
            "to_bucket",
            "action",
            "reason",
            "changed_by",
        ],
        "properties": {
            "changed_at": _TIME,
            "from_priority": {"type": "integer"},
            "to_priority": {"type": "integer"},
            "from_bucket": {"type": "string"},
            "to_bucket": {"type": "string"},
            "action": {"type": "string"},
            "reason": {"type": "string"},
            "changed_by": {"type": "string"},
        },
    },  # fmt: skip
    "Task": {
        "type": "object",
        "required": [
            "id",
            "name",
            "category",
            "phase",
            "priority",
            "priority_label",
            "bucket",
            "status",
            "args",
            "generation",
            "attempts",
            "max_attempts",
            "created_at",
            "queued_at",
            "publish_pending",
            "priority_history",
        ],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "category": {"type": "string"},
            "phase": {"type": "string"},
            "priority": {"type": "integer", "minimum": 0, "maximum": 10},
            "priority_label": {"type": "string"},
            "bucket": {"type": "string", "enum": [b.value for b in BUCKETS_IN_ORDER]},
            "status": {"type": "string", "enum": STATUSES},
            "args": {"type": "object"},
            "result": {"nullable": True, "description": "what the task returned (any JSON)"},
            "error": _nullable({"type": "string"}),
            "correlation_id": _nullable({"type": "string"}),
            "created_by": _nullable({"type": "string"}),
            "generation": {"type": "integer"},
            "attempts": {"type": "integer"},
            "max_attempts": {"type": "integer"},
            "worker_id": _nullable({"type": "string"}),
            "created_at": _TIME,
            "queued_at": _TIME,
            "started_at": _nullable(_TIME),
            "finished_at": _nullable(_TIME),
            "publish_pending": {"type": "boolean"},
            "priority_history": {"type": "array", "items": {"$ref": "#/components/schemas/HistoryEntry"}},
        },
    },  # fmt: skip
    "TaskSummary": {
        "type": "object",
        "required": [
            "id",
            "name",
            "category",
            "phase",
            "priority",
            "priority_label",
            "bucket",
            "status",
            "attempts",
            "max_attempts",
            "created_at",
        ],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "category": {"type": "string"},
            "phase": {"type": "string"},
            "priority": {"type": "integer"},
            "priority_label": {"type": "string"},
            "bucket": {"type": "string"},
            "status": {"type": "string", "enum": STATUSES},
            "attempts": {"type": "integer"},
            "max_attempts": {"type": "integer"},
            "correlation_id": _nullable({"type": "string"}),
            "created_at": _TIME,
            "queued_at": _TIME,
        },
    },  # fmt: skip
    "TaskList": {
        "type": "object",
        "required": ["tasks", "total", "count_cap", "offset", "limit", "next_offset", "next_cursor"],
        "properties": {
            "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/TaskSummary"}},
            "total": _nullable({"type": "integer", "description": "exact up to count_cap, null beyond"}),
            "count_cap": {"type": "integer"},
            "offset": _nullable({"type": "integer", "description": "null when the page followed a cursor"}),
            "limit": {"type": "integer"},
            "next_offset": _nullable({"type": "integer"}),
            "next_cursor": _nullable({"type": "string", "description": "the rows after this page: ?cursor="}),
        },
    },
    "Depths": {
        "type": "object",
        "required": ["buckets", "subjects", "database"],
        "properties": {
            "buckets": {"type": "object", "additionalProperties": {"type": "integer"}},
            "subjects": {"type": "object", "additionalProperties": {"type": "integer"}},
            "database": {"type": "object"},
        },
    },
}


def _filter(name: str, values: list[str], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": f"{description}: any of {', '.join(values)} (repeat it, or separate with commas)",
        "schema": {"type": "string"},
    }


def openapi_document(categories: tuple[str, ...]) -> dict[str, Any]:
    task = {"$ref": "#/components/schemas/Task"}
    write_errors = ("400", "403", "404", "409", "413", "422", "503")
    list_parameters = [
        _filter("status", STATUSES, "task status"),
        _filter("bucket", [b.value for b in BUCKETS_IN_ORDER], "bucket"),
        _filter("category", list(categories), "category"),
        _filter("phase", list(PHASES), "phase"),
        {"name": "q", "in": "query", "required": False, "schema": {"type": "string", "maxLength": MAX_TEXT},
         "description": "a correlation id, a task-name prefix or an id prefix (8+ hex characters)"},
        {"name": "sort", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "up to 3 of created, priority, status, name, id: column, column:asc, column:desc or -column"},
        {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_LIMIT}},
        {"name": "offset", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}},
        {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "next_cursor of the page before: the rows after it (deep pages)"},
    ]  # fmt: skip
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Switchyard HTTP API",
            "version": "1",
            "description": "Dispatch, read, upgrade, cancel and retry tasks on priority queues (docs/api.md).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "swy_... API token"}},
            "schemas": SCHEMAS,
        },
        "paths": {
            "/api/v1/me": {
                "get": {
                    "operationId": "me",
                    "summary": "the token's user, role and permissions",
                    "responses": _responses("200", {"$ref": "#/components/schemas/Me"}, "who the token is"),
                }
            },
            "/api/v1/tasks": {
                "post": {
                    "operationId": "dispatch",
                    "summary": "dispatch one task",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DispatchTask"}}},
                    },
                    "responses": _responses("201", task, "stored: it will run", "400", "403", "413", "422", "503"),
                },
                "get": {
                    "operationId": "list",
                    "summary": "a page of tasks, with the console's filters and sorts",
                    "parameters": list_parameters,
                    "responses": _responses(
                        "200", {"$ref": "#/components/schemas/TaskList"}, "a page", "400", "403", "422", "503"
                    ),
                },
            },
            "/api/v1/tasks/batch": {
                "post": {
                    "operationId": "dispatch_batch",
                    "summary": "dispatch 1 to 1000 tasks, all or nothing",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DispatchBatch"}}},
                    },
                    "responses": _responses(
                        "201", {"$ref": "#/components/schemas/Dispatched"}, "stored", "400", "403", "413", "422", "503"
                    ),
                }
            },
            "/api/v1/tasks/{task_id}": {
                "get": {
                    "operationId": "get",
                    "summary": "one task with its priority history",
                    "parameters": [_TASK_ID],
                    "responses": _responses("200", task, "the task", "403", "404", "422", "503"),
                }
            },
            "/api/v1/tasks/{task_id}/upgrade": {
                "post": {
                    "operationId": "upgrade",
                    "summary": "raise a queued task to 8, 9 or 10, with a reason",
                    "parameters": [_TASK_ID],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Upgrade"}}},
                    },
                    "responses": _responses("200", task, "the task, upgraded", *write_errors),
                }
            },
            "/api/v1/tasks/{task_id}/cancel": {
                "post": {
                    "operationId": "cancel",
                    "summary": "stop a queued task",
                    "parameters": [_TASK_ID],
                    "responses": _responses("200", task, "the task, cancelled", *write_errors),
                }
            },
            "/api/v1/tasks/{task_id}/retry": {
                "post": {
                    "operationId": "retry",
                    "summary": "re-run a failed task with a fresh set of attempts",
                    "parameters": [_TASK_ID],
                    "responses": _responses("200", task, "the task, queued again", *write_errors),
                }
            },
            "/api/v1/depths": {
                "get": {
                    "operationId": "depths",
                    "summary": "what waits in the stream, and the database's counts",
                    "responses": _responses("200", {"$ref": "#/components/schemas/Depths"}, "depths", "403", "503"),
                }
            },
        },
    }

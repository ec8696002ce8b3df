"""`POST /usage/{api_slug}` in the OpenAPI document (a drf-spectacular postprocessing hook in settings).

Ingestion is a plain Django view (and a WSGI fast route), not DRF, so drf-spectacular cannot see it;
this hook adds its operation, with the statuses and bodies of SPEC §3 as `usage.ingestion.http` and
`store.IngestResult` answer them. tests/test_openapi_conformance.py holds it to the answers.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from zenskar_site.lib.openapi import ERROR_COMPONENT, ERROR_SCHEMA, RETRY_AFTER

PATH = "/usage/{api_slug}"
ERROR_REF = {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}


def _record_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "customer_id": {"type": "string", "description": "Your customer's id."},
            "timestamp": {
                "type": "string",
                "format": "date-time",
                "description": "ISO 8601; at most INGEST_MAX_FUTURE_SECONDS ahead and INGEST_MAX_AGE_SECONDS old "
                "(unless `?backfill=true`).",
            },
            "data": {
                "type": "object",
                "additionalProperties": True,
                "description": "The fields of the usage event's dataschema, with their types.",
            },
            "idempotency_key": {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "description": "A key seen before for this usage event makes the record a duplicate.",
            },
        },
        "required": ["customer_id", "timestamp", "data"],
    }


def _result_schema() -> dict[str, Any]:
    outcome = {
        "type": "object",
        "properties": {
            "index": {"type": "integer", "description": "The record's position in the request."},
            "status": {"type": "string", "enum": ["accepted", "duplicate", "rejected"]},
            "id": {"type": "integer", "description": "The stored record (accepted or duplicate)."},
            "errors": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
                "description": "Why the record was rejected, per field.",
            },
        },
        "required": ["index", "status"],
    }
    counts = {name: {"type": "integer", "minimum": 0} for name in ("accepted", "duplicates", "rejected")}
    return {
        "type": "object",
        "properties": {**counts, "results": {"type": "array", "items": outcome}},
        "required": ["accepted", "duplicates", "rejected", "results"],
    }


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}
    if retry_after:
        response["headers"] = dict(RETRY_AFTER)
    return response


def ingestion_operation() -> dict[str, Any]:
    result = {"$ref": "#/components/schemas/IngestResult"}
    return {
        "operationId": "usage_ingest",
        "summary": "Send usage records",
        "description": "One record, or a JSON array of up to INGEST_MAX_BATCH records (a body of at most "
        "INGEST_MAX_BODY_BYTES). Each record gets its own outcome; a 2xx means every accepted record is committed.",
        "tags": ["ingestion"],
        "parameters": [
            {"in": "path", "name": "api_slug", "required": True, "schema": {"type": "string"}},
            {
                "in": "query",
                "name": "backfill",
                "schema": {"type": "boolean"},
                "description": "`true` (with a `full` key) lifts the age bound on timestamps.",
            },
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/IngestRecord"},
                            {
                                "type": "array",
                                "items": {"$ref": "#/components/schemas/IngestRecord"},
                                "minItems": 1,
                                "maxItems": settings.INGEST_MAX_BATCH,
                            },
                        ]
                    }
                }
            },
        },
        "security": [{"ApiKeyAuth": []}],
        "responses": {
            "202": {
                "description": "At least one record accepted or a duplicate.",
                "content": {"application/json": {"schema": result}},
            },
            "422": {"description": "Every record rejected.", "content": {"application/json": {"schema": result}}},
            "400": _error("Malformed JSON, a top level that is neither an object nor an array, an empty array."),
            "401": _error("No API key, or a key that is unknown or revoked."),
            "403": _error("The `organisation` header is not the key's, `backfill` without a `full` key, or HTTP."),
            "404": _error("No active usage event with that slug in the key's organisation."),
            "413": _error("The body or the batch is over its limit."),
            "415": _error("The body is not JSON."),
            "429": _error("Over the organisation's rate limit.", retry_after=True),
            "503": _error("The database could not commit: nothing was stored.", retry_after=True),
        },
    }


def ingestion_document(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular's POSTPROCESSING_HOOKS entry: adds the ingestion endpoint and its schemas."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault(ERROR_COMPONENT, ERROR_SCHEMA)
    schemas["IngestRecord"] = _record_schema()
    schemas["IngestResult"] = _result_schema()
    result.setdefault("paths", {})[PATH] = {"post": ingestion_operation()}
    return result

"""Ingestion: `POST /usage/{api_slug}` and every other writer of new records (SPEC §3).

- `http`: the request handler shared by Django's view and the fast WSGI route (`wsgi`).
- `context`: the API key and usage event of a request (one query, cached per process).
- `store`: validation and `records_store`, the one write path (the endpoint and CSV imports).
- `statements`: the record columns, defined once, and the one write statement per database.
"""

from usage.ingestion.context import IngestContext, ingest_context_internal
from usage.ingestion.store import IngestResult, content_hash_of, records_store

__all__ = ["IngestContext", "IngestResult", "content_hash_of", "ingest_context_internal", "records_store"]

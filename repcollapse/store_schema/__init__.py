"""The store contract: names, dims, dtypes, records, and create/append/open/validate helpers.

Depends on numpy, xarray and zarr only (no torch, no analysis stack).
"""

from repcollapse.store_schema.manifest import (
    CheckpointManifest,
    parse_manifest,
    read_manifest,
    validate_manifest,
)
from repcollapse.store_schema.problems import Problem, SchemaError
from repcollapse.store_schema.reader import BlockReader, StoreReader
from repcollapse.store_schema.records import (
    DOMAINS,
    SPANS,
    ProbeRecord,
    Span,
    probe_corpus_hash,
    read_probe_jsonl,
    validate_probe_record,
)
from repcollapse.store_schema.schema import SCHEMA_VERSION
from repcollapse.store_schema.store import StoreLayout, create_store, open_store, store_exists
from repcollapse.store_schema.validate import validate_store
from repcollapse.store_schema.writer import StoreWriter

__all__ = [
    "BlockReader",
    "DOMAINS",
    "SPANS",
    "SCHEMA_VERSION",
    "CheckpointManifest",
    "ProbeRecord",
    "Problem",
    "SchemaError",
    "Span",
    "StoreLayout",
    "StoreReader",
    "StoreWriter",
    "create_store",
    "open_store",
    "parse_manifest",
    "probe_corpus_hash",
    "read_manifest",
    "read_probe_jsonl",
    "store_exists",
    "validate_manifest",
    "validate_probe_record",
    "validate_store",
]

"""Regenerate the golden store of the CURRENT schema version (never overwrite an old one).

    .venv/bin/python tests/make_golden.py

Old golden stores stay committed: every later schema version must still open them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from repcollapse.store_schema import SCHEMA_VERSION, open_store
from repcollapse.store_schema.testing import SyntheticSpec, make_synthetic_store

GOLDEN_DIR = Path(__file__).parent / "golden"
GOLDEN_SPEC = SyntheticSpec(
    n_checkpoints=2, n_layers=3, n_tokens=120, n_features=8, vocab_size=20, topk=3, token_chunk=64
)


def fingerprint(ds) -> dict[str, str]:
    """sha256 of each variable's values (complete checkpoints), to detect silent changes."""
    out = {}
    for name in sorted(ds.variables):
        values = np.asarray(ds[name].values)
        data = (
            values.tobytes()
            if values.dtype.kind not in "UTSO"
            else "\x00".join(map(str, values.ravel())).encode()
        )
        out[name] = hashlib.sha256(data).hexdigest()
    return out


def main() -> None:
    path = GOLDEN_DIR / f"store_v{SCHEMA_VERSION}.zarr"
    if path.exists():
        raise SystemExit(f"{path} exists; golden stores are never rewritten")
    make_synthetic_store(path, GOLDEN_SPEC)
    fp = fingerprint(open_store(path))
    (GOLDEN_DIR / f"store_v{SCHEMA_VERSION}.fingerprint.json").write_text(
        json.dumps(fp, indent=1, sort_keys=True)
    )


if __name__ == "__main__":
    main()

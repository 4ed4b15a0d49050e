"""Merge the metric-tables directories of a study's families and shards into one.

Tables combine without their stores: each input is (study name, family, tables directory).
Every store of one family of one study gets the same ``store_id``, ``<study>/<family>``, so a
family split over shards (each shard's store holds the base and that shard's chains) reads as
one store: the base appears in every shard and is kept once, its row with the most behavioural
values first (only the shard that ran the study's first seed evaluated it). Every table is then
sorted by its key, so the merge of any sharding equals the tables of one unsharded run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from repcollapse.analyze.tables.read import TABLE_FILES, read_provenance
from repcollapse.analyze.tables.write import write_json, write_parquet
from repcollapse.store_schema.schema import BEHAVIOR_KEYS

KEYS: dict[str, list[str]] = {
    "metrics": [
        "store_id",
        "checkpoint",
        "metric",
        "metric_version",
        "layer",
        "domain",
        "span",
        "sinks_excluded",
    ],
    "checkpoints": ["store_id", "checkpoint"],
    "lora_overlap": ["store_id", "checkpoint_a", "checkpoint_b", "module", "k"],
    "lora_spectrum": ["store_id", "checkpoint", "module", "block", "index"],
}


def canonical_store_id(study: str, family: str) -> str:
    return f"{study}/{family}"


def merge_tables(inputs: Sequence[tuple[str, str, Path]], out: Path) -> Path:
    """Write the merged tables of ``inputs`` ((study, family, tables_dir), ...) to ``out``."""
    if not inputs:
        raise ValueError("study report: expected at least one tables directory, found none")
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLE_FILES}
    provenance: list[dict] = []
    for study, family, root in inputs:
        root = Path(root)
        if not (root / "metrics.parquet").is_file():
            raise FileNotFoundError(
                f"{root}: expected a tables directory with metrics.parquet (analyze metrics)"
            )
        sid = canonical_store_id(study, family)
        for name, fname in TABLE_FILES.items():
            if (root / fname).is_file():
                df = pd.read_parquet(root / fname)
                if not df.empty:
                    frames[name].append(df.assign(store_id=sid))
        for p in read_provenance(root / "provenance.json"):
            provenance.append(
                {
                    **p,
                    "source_store_id": p.get("store_id", ""),
                    "store_id": sid,
                    "tables": str(root),
                }
            )
    out.mkdir(parents=True, exist_ok=True)
    for name, fname in TABLE_FILES.items():
        if not frames[name]:
            continue
        df = pd.concat(frames[name], ignore_index=True)
        if name == "checkpoints":
            present = [c for c in BEHAVIOR_KEYS if c in df]
            df = df.assign(_n=df[present].notna().sum(axis=1))
            df = df.sort_values("_n", ascending=False, kind="stable").drop(columns="_n")
        key = [k for k in KEYS[name] if k in df]
        df = df.drop_duplicates(subset=key, keep="first")
        df = df.sort_values(key, kind="stable").reset_index(drop=True)
        write_parquet(df, out / fname)
    write_json(provenance, out / "provenance.json")
    return out


def study_inputs(dirs: Sequence[str | Path]) -> list[tuple[str, str, Path]]:
    """The tables directories under study output directories (``DIR/tables/<family>``), or
    tables directories given directly (family = the directory's name, study = its parent's)."""
    from repcollapse.study.config import StudyError

    found: list[tuple[str, str, Path]] = []
    for d in map(Path, dirs):
        if (d / "metrics.parquet").is_file():
            found.append((d.parent.name, d.name, d))
            continue
        meta = d / "cells" / "study.json"
        if not meta.is_file():
            raise StudyError(
                f"{d}: expected a study output directory (cells/study.json) or a tables "
                "directory (metrics.parquet), found neither"
            )
        name = json.loads(meta.read_text())["name"]
        fams = sorted(p.parent.name for p in (d / "tables").glob("*/metrics.parquet"))
        if not fams:
            raise StudyError(f"{d}: expected tables/<family>/metrics.parquet, found none yet")
        found += [(name, f, d / "tables" / f) for f in fams]
    return found

"""Merge the metric-tables directories of a study's families and shards into one.

Tables combine without their stores: each input is (study name, family, tables directory).
Every store of one family of one study gets the same ``store_id``, ``<study>/<family>``, so a
family split over shards (each shard's store holds the base and that shard's chains) reads as
one store: the base appears in every shard and is kept once, its row with the most behavioural
values first (only the shard that ran the study's first seed evaluated it). The derived
metrics (the collapse index and its parts: z-scores across the checkpoints of a store) depend on
which checkpoints are analysed together, so they are recomputed here through their registry
entries over each merged store. Every table is then sorted by its key, so the merge of any
sharding equals the merge of one unsharded run.

LoRA overlap pairs across seeds exist only where two seeds shared a machine (the overlap needs
the adapters, which are in the stores): the merge keeps the pairs of one seed (a chain with
itself and with the other chains of its seed, which the report's overlap figure shows), the same
for any sharding.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from repcollapse.analyze.tables.read import TABLE_FILES, read_provenance
from repcollapse.analyze.tables.write import write_json, write_parquet
from repcollapse.store_schema.schema import BEHAVIOR_KEYS
from repcollapse.study.executors import Executor, subprocess_executor

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
        terms = _base_terms(root, family)
        for p in read_provenance(root / "provenance.json"):
            provenance.append(
                {
                    **p,
                    **terms,
                    "source_store_id": p.get("store_id", ""),
                    "store_id": sid,
                    "tables": str(root),
                }
            )
    out.mkdir(parents=True, exist_ok=True)
    merged: dict[str, pd.DataFrame] = {}
    for name, fname in TABLE_FILES.items():
        if not frames[name]:
            continue
        df = pd.concat(frames[name], ignore_index=True)
        # dictionary-encoded columns as plain strings: a categorical sorts by its category
        # order, which differs from input to input, not by value
        df = df.astype(
            {c: object for c in df.columns if isinstance(df[c].dtype, pd.CategoricalDtype)}
        )
        if name == "checkpoints":
            present = [c for c in BEHAVIOR_KEYS if c in df]
            df = df.assign(_n=df[present].notna().sum(axis=1))
            df = df.sort_values("_n", ascending=False, kind="stable").drop(columns="_n")
        if name == "metrics":
            df = _rederive(df)
        if name == "lora_overlap" and merged.get("checkpoints") is not None:
            df = _same_seed_pairs(df, merged["checkpoints"])
        key = [k for k in KEYS[name] if k in df]
        df = df.drop_duplicates(subset=key, keep="first")
        df = df.sort_values(key, kind="stable").reset_index(drop=True)
        merged[name] = df
        write_parquet(df, out / fname)
    write_json(provenance, out / "provenance.json")
    return out


def report_steps(tables: Path, out: Path, run: Executor, log: Path) -> None:
    """Stats, figures and the report over one (merged) tables directory."""
    run(["analyze", "stats", str(tables)], log)
    run(["analyze", "figures", str(tables), "--out", str(out / "figures")], log)
    run(["analyze", "report", str(tables), "--out", str(out / "report.html")], log)


def merge_and_report(
    inputs: Sequence[tuple[str, str, Path]],
    out: Path,
    *,
    tables: Path | None = None,
    run: Executor = subprocess_executor,
    log: Path | None = None,
) -> Path:
    """Merge ``inputs`` ((study, family, tables_dir), ...) into ``tables`` (default
    ``out/tables``), then run stats, figures and the report over the merge into ``out`` (steps
    logged to ``log``, default ``out/report.log``); returns the merged tables directory. A
    failing step raises ``StepFailed`` with its log's tail."""
    tables = tables if tables is not None else out / "tables"
    merge_tables(inputs, tables)
    report_steps(tables, out, run, log if log is not None else out / "report.log")
    return tables


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


def _rederive(metrics: pd.DataFrame) -> pd.DataFrame:
    """``metrics`` with every registered derived metric computed again per (store, sinks
    setting, option set) from the merged rows, in registry order (a derived metric may read an
    earlier one's rows), as ``analyze metrics`` does for one store. Columns the entry does not
    give keep the group's value (option set, precision), the layer list the derived rows had
    (``layers``), or are empty (NaN, 0, '')."""
    import numpy as np

    from repcollapse.analyze import registry

    derived = [m for m in registry.REGISTRY if m.kind == "derived"]
    names = {m.row_name for m in derived}
    # dictionary-encoded (categorical) columns as plain objects: new values must fit
    metrics = metrics.astype(
        {c: object for c in metrics.columns if isinstance(metrics[c].dtype, pd.CategoricalDtype)}
    )
    keys = ["store_id", "sinks_excluded"] + [
        c for c in ("options_key", "precision") if c in metrics
    ]
    parts = []
    for _, group in metrics.groupby(keys, sort=True, dropna=False):
        old = group[group["metric"].isin(names)]
        rows = group[~group["metric"].isin(names)]
        first = group.iloc[0]
        for m in derived:
            out = m.compute(rows)
            if out.empty:
                continue
            layer = out["layer"].astype(np.int64).to_numpy()
            new = pd.DataFrame(
                {
                    "metric": m.row_name,
                    "metric_version": np.int64(m.version),
                    "checkpoint": out["checkpoint"].astype(str).to_numpy(),
                    "layer": layer,
                    "domain": "all",
                    "span": "all",
                    "value": out["value"].astype(np.float64).to_numpy(),
                    "n_tokens": np.asarray(out.get("n_tokens", 0), dtype=np.int64),
                }
            )
            for col in ("store_id", "model_family", "sinks_excluded", *keys[2:]):
                new[col] = first[col]
            if "layers" in group:
                was = old.loc[(old["metric"] == m.row_name) & (old["layer"] == -1), "layers"]
                new["layers"] = np.where(layer == -1, str(was.iloc[0]) if len(was) else "", "")
            new = new[np.isfinite(new["value"])]
            for col in rows.columns.difference(new.columns):  # as analyze writes derived rows:
                kind = rows[col].dtype.kind  # no interval (NaN), no groups (0)
                new[col] = 0 if kind in "iu" else (np.nan if kind == "f" else "")
            rows = pd.concat([rows, new[list(rows.columns)]], ignore_index=True)
        parts.append(rows)
    out = pd.concat(parts, ignore_index=True)
    plain = {c: t for c, t in metrics.dtypes.items() if t.kind in "iufb"}
    return out.astype(plain)


def _same_seed_pairs(overlap: pd.DataFrame, checkpoints: pd.DataFrame) -> pd.DataFrame:
    seed = checkpoints.set_index(["store_id", "checkpoint"])["seed"]
    a = pd.MultiIndex.from_frame(overlap[["store_id", "checkpoint_a"]]).map(seed.get)
    b = pd.MultiIndex.from_frame(overlap[["store_id", "checkpoint_b"]]).map(seed.get)
    return overlap[pd.Series(a == b, index=overlap.index)]


def _base_terms(tables: Path, family: str) -> dict[str, str]:
    """The model's terms and source from the base checkpoint's manifest, where the tables sit in
    a study output directory (``OUT/tables/<family>`` beside ``OUT/families/<family>/base``)."""
    manifest = tables.parent.parent / "families" / family / "base" / "manifest.json"
    try:
        resolved = json.loads(manifest.read_text()).get("resolved_config", {})
    except (OSError, json.JSONDecodeError):
        return {}
    return {f"model_{k}": str(resolved[k]) for k in ("terms", "source") if k in resolved}

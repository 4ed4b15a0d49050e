"""Result cache: metric rows keyed by (store_id, checkpoint, metric, metric_version, options).

One Parquet file of rows and one JSON list of "done" keys per checkpoint, under
``DIR/cache/<store_id>/``. A key is done once computed, even when it produced no row (cka_parent
of the base), so a re-run recomputes nothing; a new metric version or different options make a
new key. Checkpoints of a store never change once complete, so entries never go stale. Files
are replaced atomically (write, then rename), so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

ROW_COLUMNS: tuple[str, ...] = (
    "metric",
    "metric_version",
    "options_key",
    "checkpoint",
    "layer",
    "domain",
    "span",
    "value",
    "n_tokens",
)
INTERVAL_COLUMNS: tuple[str, ...] = ("se", "ci_low", "ci_high", "n_groups")
"""A moment row's jackknife interval (``repcollapse.analyze.engine.uncertainty``): NaN, NaN,
NaN, 0 where none was computed. Rows may omit them (function, LoRA, derived metrics)."""
CACHED_COLUMNS: tuple[str, ...] = (*ROW_COLUMNS, *INTERVAL_COLUMNS)
DoneKey = tuple[str, int, str, int]
"""(metric, metric_version, options_key, layer)."""


def rows_frame(rows: Iterable[tuple]) -> pd.DataFrame:
    """Row tuples (in ROW_COLUMNS order, optionally followed by INTERVAL_COLUMNS) as a frame
    with every cached column."""
    rows = list(rows)
    width = len(rows[0]) if rows else len(ROW_COLUMNS)
    return with_intervals(pd.DataFrame(rows, columns=list(CACHED_COLUMNS[:width])))


def with_intervals(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the interval columns it lacks (NaN; n_groups 0), in CACHED_COLUMNS order
    first (a cache written before intervals existed reads as rows without them)."""
    df = df.copy()
    for col in INTERVAL_COLUMNS:
        if col not in df.columns:
            df[col] = 0 if col == "n_groups" else float("nan")
    df["n_groups"] = df["n_groups"].fillna(0).astype("int64")
    return df[[*CACHED_COLUMNS, *[c for c in df.columns if c not in CACHED_COLUMNS]]]


def _safe(name: str) -> str:
    """A file-name stem for ``name``: a readable prefix, then a hash of the exact name.

    The prefix alone is not injective ('a/b' and 'a b' both read 'a_b'; case-insensitive
    filesystems fold 'Base' and 'base'); the hash of the exact name is, so it stays in the
    stem. Suffixes are appended to the stem, never put with ``Path.with_suffix``, which would
    cut a name like 'lr0.001-<hash>' at its dot and make 'lr0.001' and 'lr0.0001' one file.
    """
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]
    digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{stem}-{digest}"


class MetricCache:
    def __init__(self, out_dir: str | Path, store_id: str) -> None:
        self.dir = Path(out_dir) / "cache" / _safe(store_id)
        self._rows: dict[str, pd.DataFrame] = {}
        self._done: dict[str, set[DoneKey]] = {}

    def _paths(self, checkpoint: str) -> tuple[Path, Path]:
        stem = _safe(checkpoint)
        return self.dir / f"{stem}.parquet", self.dir / f"{stem}.done.json"

    def _load(self, checkpoint: str) -> None:
        if checkpoint in self._rows:
            return
        rows_p, done_p = self._paths(checkpoint)
        self._rows[checkpoint] = with_intervals(
            pd.read_parquet(rows_p) if rows_p.exists() else pd.DataFrame(columns=list(ROW_COLUMNS))
        )
        done = json.loads(done_p.read_text()) if done_p.exists() else []
        self._done[checkpoint] = {(m, int(v), k, int(layer)) for m, v, k, layer in done}

    def done(self, checkpoint: str) -> set[DoneKey]:
        self._load(checkpoint)
        return self._done[checkpoint]

    def rows(self, checkpoint: str) -> pd.DataFrame:
        self._load(checkpoint)
        return self._rows[checkpoint]

    def add(self, checkpoint: str, rows: pd.DataFrame, done: Iterable[DoneKey]) -> None:
        """Record rows and done keys (replacing rows of the same keys) and write to disk."""
        self._load(checkpoint)
        done = set(done)
        old = self._rows[checkpoint]
        if len(old) and done:
            key = list(
                zip(
                    old["metric"],
                    old["metric_version"].astype(int),
                    old["options_key"],
                    old["layer"].astype(int),
                    strict=True,
                )
            )
            old = old[[k not in done for k in key]]
        parts = [with_intervals(p) for p in (old, rows) if len(p)]
        new = (
            pd.concat(parts, ignore_index=True)
            if parts
            else with_intervals(pd.DataFrame(columns=list(ROW_COLUMNS)))
        )
        self._rows[checkpoint] = new[list(CACHED_COLUMNS)]
        self._done[checkpoint] |= done
        self._write(checkpoint)

    def table(self, name: str, key: dict) -> pd.DataFrame | None:
        """A whole-store table cached under ``key`` (JSON-able), or None if absent or stale."""
        data, key_p = self.dir / f"{name}.parquet", self.dir / f"{name}.key.json"
        if not (data.exists() and key_p.exists()):
            return None
        if json.loads(key_p.read_text()) != json.loads(json.dumps(key)):
            return None
        return pd.read_parquet(data)

    def save_table(self, name: str, key: dict, df: pd.DataFrame) -> None:
        """Cache a whole-store table (data first, then its key: a torn write reads as stale)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        data, key_p = self.dir / f"{name}.parquet", self.dir / f"{name}.key.json"
        key_p.unlink(missing_ok=True)
        tmp = data.with_suffix(".parquet.tmp")
        df.to_parquet(tmp, index=False)
        os.replace(tmp, data)
        tmp = key_p.with_suffix(".tmp")
        tmp.write_text(json.dumps(key))
        os.replace(tmp, key_p)

    def _write(self, checkpoint: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        rows_p, done_p = self._paths(checkpoint)
        tmp = rows_p.parent / f"{rows_p.name}.tmp"
        self._rows[checkpoint].to_parquet(tmp, index=False)
        os.replace(tmp, rows_p)
        tmp = done_p.parent / f"{done_p.name}.tmp"
        tmp.write_text(json.dumps(sorted(self._done[checkpoint])))
        os.replace(tmp, done_p)

"""Typeable checkpoint names (repcollapse.store_schema.naming): made from the coordinates of every
kind of chain, unique over the paper study's stores, read back to their coordinates; stores and
tables written with the legacy names (``A[replay:general:0.10]@s0/01-general``) still open, and
either form selects a checkpoint in xarray and in DuckDB."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import repcollapse as rc
from repcollapse.analyze.tables.query import query
from repcollapse.store_schema import open_store as schema_open_store
from repcollapse.store_schema import validate_store
from repcollapse.store_schema.naming import (
    CheckpointId,
    checkpoint_name,
    legacy_checkpoint_name,
    mitigation_slug,
    parse_checkpoint_name,
    stored_names,
    typeable_name,
    typeable_names,
)
from repcollapse.store_schema.testing import SyntheticSpec, make_synthetic_store
from repcollapse.study.config import load_study
from repcollapse.train.config import Mitigation
from repcollapse.train.config_load import load_config
from repcollapse.train.stage_plan import StagePlan
from repcollapse.train.stage_plan import checkpoint_name as stage_checkpoint_name

ROOT = Path(__file__).resolve().parents[1]
TYPEABLE = re.compile(r"[A-Za-z0-9._-]+")

MITIGATIONS = [
    Mitigation(),
    Mitigation(replay_fraction=0.1, replay_source="general"),
    Mitigation(replay_fraction=0.05, replay_source="earlier"),
    Mitigation(replay_fraction=0.2, replay_source="random"),
    Mitigation(refresh_after=("math",)),
    Mitigation(diversity_weight=0.1),
    Mitigation(diversity_weight=1e-5),  # an exponent in the label: '1e-05'
    Mitigation(decorrelate_weight=2e6),  # and a '+' in one: '2e+06'
    Mitigation(rank=32),
    Mitigation(noop=True),
    Mitigation(replay_fraction=0.1, diversity_weight=0.5, noop=True),  # several parts
]


def paper_names() -> dict[str, list[tuple[str, CheckpointId, dict]]]:
    """Every checkpoint of the paper study, per family store: (name, what it was made of, the
    coordinates the store gets)."""
    study = load_study(ROOT / "studies" / "paper.toml")
    out: dict[str, list[tuple[str, CheckpointId, dict]]] = {}
    configs = {c: load_config(c) for c in study.configs()}
    for fam in [f.label for f in study.families]:
        rows = [("base", CheckpointId("", "none", None, 0, "base"), {"stage_index": 0})]
        for seed in study.seeds:
            for cfg in configs.values():
                for i, spec in enumerate(cfg.expanded_stages(), start=1):
                    coords = {
                        "sequence": cfg.sequence,
                        "mitigation": cfg.mitigation.name,
                        "seed": seed,
                        "stage_index": i,
                        "stage": spec.name,
                        "stage_kind": spec.kind,
                    }
                    name = checkpoint_name(**coords)
                    made = CheckpointId(
                        cfg.sequence,
                        mitigation_slug(cfg.mitigation.name),
                        seed,
                        i,
                        spec.name,
                        spec.kind == "full",
                    )
                    rows.append((name, made, coords))
        out[fam] = rows
    return out


def test_every_kind_of_chain_gets_a_typeable_name_that_reads_back() -> None:
    stages = [("general", "sft"), ("math", "sft"), ("dpo", "dpo"), ("refresh_math", "refresh")]
    stages += [("general_2", "full")]  # an expanded (repeated) stage, fully fine-tuned
    seen: dict[str, tuple] = {}
    for mit in MITIGATIONS:
        for seq in ("A", "control", "my-seq_2"):
            for seed in (0, 7, 123):
                for i, (stage, kind) in enumerate(stages, start=1):
                    key = (seq, mit.name, seed, i, stage, kind)
                    name = checkpoint_name(*key)
                    assert TYPEABLE.fullmatch(name), (key, name)
                    assert name not in seen, (key, seen.get(name))
                    seen[name] = key
                    back = parse_checkpoint_name(name)
                    assert back == CheckpointId(
                        seq, mitigation_slug(mit.name), seed, i, stage, kind == "full"
                    )
                    assert (
                        checkpoint_name(back.sequence, back.mitigation, seed, i, stage, kind)
                        == name
                    )  # the slug is its own slug: the name is a fixed point
    assert len(seen) == len(MITIGATIONS) * 3 * 3 * len(stages)
    assert checkpoint_name("A", "none", 0, 0, "base") == "base"
    assert parse_checkpoint_name("base").stage_index == 0
    # the examples the docs give
    assert checkpoint_name("A", "replay:general:0.10", 0, 2, "math") == (
        "A.replay_general_0.10.s0.02-math"
    )
    assert checkpoint_name("A", "none", 0, 1, "general") == "A.s0.01-general"
    assert checkpoint_name("A", "none", 0, 1, "general", "full") == "A.full.s0.01-general"
    assert checkpoint_name("A", "noop", 1, 3, "code") == "A.noop.s1.03-code"


def test_training_names_its_stages_so() -> None:
    """train's checkpoint_name is this one, over the shipped configs' (expanded) stages."""
    for path in sorted((ROOT / "repcollapse" / "train" / "configs").glob("*.toml")):
        cfg = load_config(str(path))
        for i, spec in enumerate(cfg.expanded_stages(), start=1):
            name = stage_checkpoint_name(cfg, StagePlan(index=i, spec=spec))
            assert TYPEABLE.fullmatch(name), (path.name, name)
            back = parse_checkpoint_name(name)
            assert (back.sequence, back.seed, back.stage_index, back.stage) == (
                cfg.sequence,
                cfg.seed,
                i,
                spec.name,
            )
            assert back.mitigation == mitigation_slug(cfg.mitigation.name)
            assert back.full == (spec.kind == "full")


def test_names_are_unique_in_every_store_of_the_paper_study() -> None:
    """One store per family holds every config and seed; the legacy names clashed there (A and
    A_full share sequence, mitigation 'none', seed and stage names)."""
    stores = paper_names()
    assert len(stores) == 2
    for rows in stores.values():
        names = [n for n, _, _ in rows]
        assert len(names) == 1 + 3 * 63  # base + 3 seeds x (17 stages of A-D, control + 46)
        assert not [n for n, c in Counter(names).items() if c > 1]
        for name, made, _coords in rows:
            assert TYPEABLE.fullmatch(name)
            assert parse_checkpoint_name(name) == made
        legacy = Counter(
            legacy_checkpoint_name(
                *(c[k] for k in ("sequence", "mitigation", "seed", "stage_index", "stage"))
            )
            if c["stage_index"]
            else "base"
            for _, _, c in rows
        )
        assert legacy["A@s0/01-general"] == 2  # the clash the new names resolve


def test_legacy_names_map_to_the_new_ones() -> None:
    for mit in MITIGATIONS:
        for i, stage in enumerate(("general", "long_cot", "general_3"), start=1):
            old = legacy_checkpoint_name("A", mit.name, 2, i, stage)
            assert not TYPEABLE.fullmatch(old)
            assert typeable_name(old) == checkpoint_name("A", mit.name, 2, i, stage)
    assert typeable_name("A[replay:general:0.10]@s0/01-general") == (
        "A.replay_general_0.10.s0.01-general"
    )
    assert typeable_name("A.s0.01-general") == "A.s0.01-general"  # typeable: itself
    assert typeable_name("base") == "base" and typeable_name("") == ""
    assert typeable_name("A/01-stage") == "A/01-stage"  # given by hand: as it is
    assert typeable_name("A[x]@s0/01-a.b") == "A[x]@s0/01-a.b"  # not a legacy stage name
    # kept one-to-one: a legacy name whose form is already in the store keeps its stored one
    assert typeable_names(["A@s0/01-g", "A.s0.01-g", "A@s1/01-g"]) == [
        "A@s0/01-g",
        "A.s0.01-g",
        "A.s1.01-g",
    ]


def test_bad_fields_are_named() -> None:
    with pytest.raises(ValueError, match="sequence: expected ASCII.*'Aé'"):
        checkpoint_name("Aé", "none", 0, 1, "general")
    with pytest.raises(ValueError, match="stage: expected ASCII.*'ma.th'"):
        checkpoint_name("A", "none", 0, 1, "ma.th")
    with pytest.raises(ValueError, match="seed: expected an integer >= 0, found -1"):
        checkpoint_name("A", "none", -1, 1, "general")
    with pytest.raises(ValueError, match="expected 'base' or"):
        parse_checkpoint_name("A@s0/01-general")


# --- stores and tables --------------------------------------------------------------------------

SPEC = SyntheticSpec(n_checkpoints=3, n_layers=2, n_tokens=120, n_features=8, token_chunk=64)
LEGACY = ["base", "A[replay:general:0.10]@s0/01-math", "A[replay:general:0.10]@s0/02-code"]
NEW = ["base", "A.replay_general_0.10.s0.01-math", "A.replay_general_0.10.s0.02-code"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("names")
    out = {}
    for kind, names in (("legacy", LEGACY), ("new", NEW)):
        out[kind] = root / f"{kind}.zarr"
        make_synthetic_store(
            out[kind], SPEC, names=names, sequence="A", mitigation="replay:general:0.10"
        )
    return out


def test_a_store_with_legacy_names_still_opens_and_selects_by_either(stores) -> None:
    url = stores["legacy"]
    assert validate_store(url)[0] == []  # an older store stays valid as it is
    raw = schema_open_store(url)  # the contract's reader: names as stored
    assert list(raw.checkpoint.values) == LEGACY
    ds = rc.open_store(url)
    assert list(ds.checkpoint.values) == NEW
    assert list(ds.checkpoint_label.values) == LEGACY
    assert list(ds.parent.values) == ["", "base", NEW[1]]
    # the same data whichever way it is selected
    want = raw.hidden.sel(checkpoint=LEGACY[2]).values
    np.testing.assert_array_equal(ds.hidden.sel(checkpoint=NEW[2]).values, want)
    np.testing.assert_array_equal(ds.hidden.sel(checkpoint_label=LEGACY[2]).values, want)
    for name in (NEW[2], LEGACY[2]):
        np.testing.assert_array_equal(rc.sel_checkpoint(ds, name).hidden.values, want)
    both = rc.sel_checkpoint(ds, [LEGACY[1], NEW[0]])
    assert list(both.checkpoint.values) == [NEW[1], "base"]
    with pytest.raises(KeyError, match="expected one of .*found 'A.s0.02-code'"):
        rc.sel_checkpoint(ds, "A.s0.02-code")


def test_a_store_with_new_names_selects_by_name(stores) -> None:
    ds = rc.open_store(stores["new"])
    assert list(ds.checkpoint.values) == NEW == list(ds.checkpoint_label.values)
    assert list(schema_open_store(stores["new"]).checkpoint.values) == NEW
    for c in range(1, len(NEW)):  # each name reads back to its checkpoint's coordinates
        at = ds.isel(checkpoint=c)
        got = parse_checkpoint_name(str(at.checkpoint.values))
        assert (got.sequence, got.seed, got.stage_index) == (
            str(at.sequence.values),
            int(at.seed.values),
            int(at.stage_index.values),
        )
        assert got.mitigation == mitigation_slug(str(at.mitigation.values))
    legacy = rc.open_store(stores["legacy"])
    np.testing.assert_array_equal(  # same synthetic data, same selection
        ds.hidden.sel(checkpoint=NEW[1]).values, legacy.hidden.sel(checkpoint=NEW[1]).values
    )


@pytest.fixture(scope="module")
def tables(stores, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tables")
    out = {}
    for kind, url in stores.items():
        out[kind] = root / kind
        rc.run_metrics(url, out[kind], metrics=["erank", "cka_parent"])
    return out


def test_tables_of_either_store_select_by_the_new_name_in_duckdb(tables) -> None:
    stored = pd.read_parquet(tables["legacy"] / "checkpoints.parquet")
    assert sorted(stored["checkpoint"]) == sorted(LEGACY)  # tables keep the stored names
    for kind in ("legacy", "new"):
        sql = (
            "SELECT m.checkpoint, c.parent, count(*) AS n FROM metrics m "
            "JOIN checkpoints c USING (store_id, checkpoint) "
            f"WHERE m.checkpoint = '{NEW[2]}' GROUP BY ALL"
        )
        got = query(sql, tables[kind])
        assert len(got) == 1 and got["n"].iloc[0] > 0, kind
        assert got[["checkpoint", "parent"]].iloc[0].tolist() == [NEW[2], NEW[1]]
    # the legacy tables keep their stored names beside, and select by them too
    by_label = query(
        f"SELECT DISTINCT checkpoint FROM metrics WHERE checkpoint_label = '{LEGACY[2]}'",
        tables["legacy"],
    )
    assert by_label["checkpoint"].tolist() == [NEW[2]]
    # tables with current names are registered exactly as written (no added column)
    cols = query("SELECT * FROM checkpoints LIMIT 0", tables["new"]).columns
    assert "checkpoint_label" not in cols
    # the values are the same whichever name the store was written with
    q = "SELECT checkpoint, metric, layer, domain, span, value FROM metrics ORDER BY ALL"
    old, new = query(q, tables["legacy"]), query(q, tables["new"])
    pd.testing.assert_frame_equal(old, new)


def test_load_tables_show_typeable_names(tables) -> None:
    for kind in ("legacy", "new"):
        long = rc.load_tables(tables[kind])
        assert set(long["checkpoint"]) == set(NEW)
        assert set(long["checkpoint_label"]) == set(LEGACY if kind == "legacy" else NEW)
        wide = rc.load_tables(tables[kind], wide=True).set_index("checkpoint")
        assert wide.loc[NEW[2], "checkpoint_label"] == (LEGACY if kind == "legacy" else NEW)[2]


def test_analyze_takes_either_form_of_a_name_on_the_command_line(stores, tmp_path: Path) -> None:
    """`analyze metrics --checkpoints` is typed in a shell: the current form selects the legacy
    name of an older store (and the legacy name still works)."""
    from repcollapse.cli.main import main

    for given in (NEW[2], LEGACY[2]):
        out = tmp_path / given.replace("/", "_")
        argv = ["analyze", "metrics", str(stores["legacy"]), "--out", str(out)]
        assert main([*argv, "--metrics", "erank", "--checkpoints", given]) == 0
        rows = pd.read_parquet(out / "metrics.parquet")
        assert set(rows["checkpoint"]) == {LEGACY[2]}  # tables keep the stored name
    assert stored_names(["A.s0.01-x", "base", "nope"], ["base", "A@s0/01-x"]) == [
        "A@s0/01-x",
        "base",
        "nope",
    ]

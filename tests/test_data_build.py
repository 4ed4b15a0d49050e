"""`repcollapse data build`: determinism, balance, validity, disjointness, manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from repcollapse.cli.main import main as cli_main
from repcollapse.store_schema.records import (
    DOMAINS,
    ProbeRecord,
    Span,
    probe_corpus_hash,
    read_probe_jsonl,
    validate_probe_record,
)
from repcollapse.train.data import FUTURE_TASKS, POOL_DOMAINS, DataConfig, build_data

SMALL = DataConfig(
    seed=3, probe_per_domain=20, pool_train=40, pool_eval=10, preference_train=30,
    preference_eval=10, future_train=20, future_eval=10,
)  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    build_data(out, DataConfig())
    return out


@pytest.fixture(scope="module")
def built_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generators-only corpus: the tests of template content need it since the default
    source became real data (tests/test_data_real.py checks the real corpus)."""
    out = tmp_path_factory.mktemp("data_synthetic")
    build_data(out, DataConfig(source="synthetic"))
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    build_data(tmp_path / "a", SMALL)
    build_data(tmp_path / "b", SMALL)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert sorted(a) == sorted(b)
    assert all(a[k] == b[k] for k in a)


def test_different_seed_gives_different_files(tmp_path: Path) -> None:
    build_data(tmp_path / "a", SMALL)
    build_data(tmp_path / "b", DataConfig(**{**SMALL.__dict__, "seed": 4}))
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    for rel in ("probe.jsonl", "pools/math.train.jsonl", "future/cipher.eval.jsonl"):
        assert a[rel] != b[rel], rel


def test_layout_and_counts(built: Path) -> None:
    expected = {"probe.jsonl"}
    for d in (*POOL_DOMAINS, "preference"):
        expected |= {f"pools/{d}.train.jsonl", f"pools/{d}.eval.jsonl"}
    for t in FUTURE_TASKS:
        expected |= {f"future/{t}.train.jsonl", f"future/{t}.eval.jsonl"}
    assert len(FUTURE_TASKS) >= 2
    assert set(_files(built)) == expected | {"MANIFEST.json"}
    cfg = DataConfig()
    for d in POOL_DOMAINS:
        assert len(_jsonl(built / f"pools/{d}.train.jsonl")) == cfg.pool_train
        assert len(_jsonl(built / f"pools/{d}.eval.jsonl")) == cfg.pool_eval


def test_probe_balanced_valid_sorted(built_synthetic: Path) -> None:
    built = built_synthetic
    raw = _jsonl(built / "probe.jsonl")
    for i, obj in enumerate(raw):
        assert validate_probe_record(obj, f"line {i + 1}") == []
    records = read_probe_jsonl(built / "probe.jsonl")
    counts = {d: sum(r.domain == d for r in records) for d in DOMAINS}
    assert counts == {d: 100 for d in DOMAINS}
    order = {d: i for i, d in enumerate(DOMAINS)}
    keys = [(order[r.domain], r.id) for r in records]
    assert keys == sorted(keys)
    assert records[0].id == "probe-general-0000"
    assert {r.source for r in records} == {"repcollapse-generator/1"}
    assert {r.license for r in records} == {"Apache-2.0"}


def test_probe_spans(built: Path) -> None:
    records = read_probe_jsonl(built / "probe.jsonl")
    for r in records:
        names = [s.name for s in r.spans]
        for s in r.spans:
            assert 0 <= s.start < s.end <= len(r.reference), (r.id, s)
        # early/late halves tile the reference
        early, late = (
            next(s for s in r.spans if s.name == n) for n in ("early_response", "late_response")
        )
        assert early.start == 0 and early.end == late.start and late.end == len(r.reference)
        if r.domain in ("math", "long_cot"):
            cot = next(s for s in r.spans if s.name == "cot")
            assert r.reference[cot.end :].startswith("\nAnswer:")
        # safety alternates harmful (even index: refusal span) and benign look-alikes
        harmful = r.domain == "safety" and int(r.id.rsplit("-", 1)[1]) % 2 == 0
        assert ("refusal" in names) == harmful, r.id


def test_pools_disjoint_from_probe_and_each_other(built: Path) -> None:
    probe_prompts = {r.prompt for r in read_probe_jsonl(built / "probe.jsonl")}
    seen: dict[str, str] = {}
    for path in sorted((built / "pools").glob("*.jsonl")) + sorted(
        (built / "future").glob("*.jsonl")
    ):
        for rec in _jsonl(path):
            assert rec["prompt"] not in probe_prompts, (path.name, rec["id"])
            assert rec["prompt"] not in seen, (path.name, rec["id"], seen.get(rec["prompt"]))
            seen[rec["prompt"]] = rec["id"]


def test_pool_record_contents(built_synthetic: Path) -> None:
    built = built_synthetic
    for d in POOL_DOMAINS:
        recs = _jsonl(built / f"pools/{d}.train.jsonl")
        assert all(r["domain"] == d and r["id"].startswith(f"{d}-train-") for r in recs)
        templates = {r["meta"]["template"] for r in recs}
        assert len(templates) >= (15 if d != "safety" else 30), (d, len(templates))
    safety = _jsonl(built / "pools/safety.train.jsonl")
    assert sum(r["meta"]["harmful"] for r in safety) == len(safety) // 2
    for r in _jsonl(built / "pools/math.eval.jsonl") + _jsonl(built / "pools/long_cot.eval.jsonl"):
        assert r["response"].endswith(f"\nAnswer: {r['meta']['answer']}")
    for r in _jsonl(built / "pools/long_cot.eval.jsonl"):
        assert r["response"].count("\n") >= 3
    for r in _jsonl(built / "pools/code.eval.jsonl"):
        assert r["response"].startswith("```python\n") and r["meta"]["tests"]
        assert all(t.startswith(f"assert {r['meta']['entry_point']}(") for t in r["meta"]["tests"])
    for r in _jsonl(built / "pools/preference.train.jsonl"):
        assert r["domain"] == "preference" and r["chosen"] != r["rejected"]
    for t in FUTURE_TASKS:
        for r in _jsonl(built / f"future/{t}.eval.jsonl"):
            assert r["domain"] == t and r["response"] == r["meta"]["answer"]


def test_manifest(built: Path) -> None:
    manifest = json.loads((built / "MANIFEST.json").read_text())
    assert manifest["seed"] == 0
    files = _files(built)
    files.pop("MANIFEST.json")
    assert set(manifest["sha256"]) == set(files)
    for rel, data in files.items():
        assert manifest["sha256"][rel] == hashlib.sha256(data).hexdigest()
        assert manifest["counts"][rel] == data.count(b"\n")
    assert manifest["probe_hash"] == probe_corpus_hash(read_probe_jsonl(built / "probe.jsonl"))


def test_probe_hash_stable_and_matches_hashlib() -> None:
    recs = [
        ProbeRecord("p-1", "math", "1+1?", "2", (Span("early_response", 0, 1),), "s", "MIT"),
        ProbeRecord("p-2", "code", "hi", "hello", (), "s", "MIT"),
    ]
    h = hashlib.sha256()
    for r in recs:
        d = {"id": r.id, "domain": r.domain, "prompt": r.prompt, "reference": r.reference,
             "spans": [{"name": s.name, "start": s.start, "end": s.end} for s in r.spans],
             "source": r.source, "license": r.license}  # fmt: skip
        h.update(json.dumps(d, ensure_ascii=False, sort_keys=True).encode() + b"\n")
    assert probe_corpus_hash(recs) == h.hexdigest()
    assert probe_corpus_hash(list(recs)) == probe_corpus_hash(tuple(recs))
    assert probe_corpus_hash(recs[::-1]) != probe_corpus_hash(recs)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("probe_per_domain", 0, "probe_per_domain"),
        ("pool_train", -1, "pool_train"),
        ("seed", -5, "seed"),
        ("pool_eval", True, "pool_eval"),
        ("future_eval", 2.5, "future_eval"),
    ],
)
def test_config_validation_names_field_and_value(field: str, value: object, needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as err:
        DataConfig(**{field: value})
    assert repr(value) in str(err.value) or str(value) in str(err.value)


def test_cli_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    rc = cli_main(["data", "build", "--out", str(out), "--seed", "3", "--probe-per-domain", "20",
                   "--pool-train", "40", "--pool-eval", "10", "--preference-train", "30",
                   "--preference-eval", "10", "--future-train", "20", "--future-eval", "10"])  # fmt: skip
    assert rc == 0
    build_data(tmp_path / "api", SMALL)
    assert _files(out) == _files(tmp_path / "api")
    assert "wrote" in capsys.readouterr().out
    assert cli_main(["data", "build", "--out", str(out), "--probe-per-domain", "0"]) == 2
    assert "probe_per_domain" in capsys.readouterr().err

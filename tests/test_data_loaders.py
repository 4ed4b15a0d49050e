"""`repcollapse.train.data.load_records`: users' JSONL files and HF datasets, with errors naming
file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repcollapse.store_schema.problems import SchemaError
from repcollapse.store_schema.records import ProbeRecord
from repcollapse.train.data import DataConfig, build_data, load_records

GOOD_SFT = [
    {
        "id": "a",
        "domain": "math",
        "prompt": "1+1?",
        "response": "2\nAnswer: 2",
        "meta": {"answer": "2"},
    },
    {
        "id": "b",
        "domain": "safety",
        "prompt": "hi",
        "response": "hello",
        "meta": {"harmful": False},
    },
    {"id": "c", "domain": "mydomain", "prompt": "x", "response": "y"},
]


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_loads_generated_files(tmp_path: Path) -> None:
    cfg = DataConfig(probe_per_domain=5, pool_train=10, pool_eval=5, preference_train=5,
                     preference_eval=5, future_train=5, future_eval=5)  # fmt: skip
    build_data(tmp_path, cfg)
    for d in ("general", "math", "code", "safety", "long_cot"):
        assert len(load_records(tmp_path / f"pools/{d}.train.jsonl", "sft")) == 10
    assert len(load_records(tmp_path / "future/cipher.eval.jsonl")) == 5
    prefs = load_records(str(tmp_path / "pools/preference.eval.jsonl"), kind="preference")
    assert len(prefs) == 5 and all(p["domain"] == "preference" for p in prefs)
    probe = load_records(tmp_path / "probe.jsonl", kind="probe")
    assert len(probe) == 30 and isinstance(probe[0], ProbeRecord)


def test_good_user_file_defaults_meta(tmp_path: Path) -> None:
    recs = load_records(_write(tmp_path / "u.jsonl", GOOD_SFT))
    assert [r["id"] for r in recs] == ["a", "b", "c"]
    assert recs[2]["meta"] == {}


def test_malformed_jsonl_names_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    lines = [
        json.dumps(GOOD_SFT[0]),
        json.dumps({"id": "x", "domain": "math", "prompt": "p", "response": 5, "meta": {"answer": "1"}}),
        "{not json",
        json.dumps({"id": "y", "domain": "math", "prompt": "p", "response": "r", "meta": {}}),
        json.dumps({"id": "z", "domain": "code", "prompt": "p", "response": "r",
                    "meta": {"entry_point": "f", "tests": []}}),
        json.dumps(GOOD_SFT[0]),  # duplicate id
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(SchemaError) as err:
        load_records(path, "sft")
    locations = [p.location for p in err.value.problems]
    assert f"{path}:2 field 'response'" in locations
    assert f"{path}:3" in locations
    assert f"{path}:4 field 'meta.answer'" in locations
    assert f"{path}:5 field 'meta.tests'" in locations
    assert f"{path}:6 field 'id'" in locations
    assert "bad.jsonl:2 field 'response'" in str(err.value)


def test_preference_missing_field(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", [{"id": "1", "prompt": "p", "chosen": "c"}])
    with pytest.raises(SchemaError, match=r"p\.jsonl:1 field 'rejected'"):
        load_records(path, "preference")


def test_probe_errors_name_line_and_field(tmp_path: Path) -> None:
    row = {"id": "p", "domain": "math", "prompt": "q", "reference": "abc", "source": "s",
           "license": "MIT", "spans": [{"name": "cot", "start": 0, "end": 9}]}  # fmt: skip
    path = _write(tmp_path / "probe.jsonl", [row])
    with pytest.raises(SchemaError, match=r"probe\.jsonl:1 field 'spans\[0\]'"):
        load_records(path, "probe")


def test_empty_missing_and_bad_kind(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(SchemaError, match="at least one record"):
        load_records(tmp_path / "empty.jsonl")
    with pytest.raises(SchemaError, match="expected a JSONL file"):
        load_records(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="kind"):
        load_records(tmp_path / "empty.jsonl", kind="dpo")


def test_list_of_dicts_names_row() -> None:
    with pytest.raises(SchemaError, match=r"records row 1 field 'meta.harmful'"):
        load_records([GOOD_SFT[0], {**GOOD_SFT[1], "meta": {"harmful": "no"}}])


def test_hf_dataset() -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([GOOD_SFT[0], {**GOOD_SFT[0], "id": "a2"}])
    recs = load_records(ds, "sft")
    assert [r["id"] for r in recs] == ["a", "a2"]
    bad = datasets.Dataset.from_list(
        [{"id": "q", "domain": "math", "prompt": "p", "response": "r"}]
    )
    with pytest.raises(SchemaError, match=r"dataset row 0 field 'meta.answer'"):
        load_records(bad, "sft")
    with pytest.raises(SchemaError, match="DatasetDict"):
        load_records(datasets.DatasetDict({"train": ds}), "sft")
    probe = datasets.Dataset.from_list(
        [{"id": "p", "domain": "math", "prompt": "q", "reference": "abc", "source": "s",
          "license": "MIT", "spans": [{"name": "cot", "start": 0, "end": 2}]}]
    )  # fmt: skip
    assert load_records(probe, "probe")[0].spans[0].end == 2

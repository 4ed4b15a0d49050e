"""Run a study's cells: each is one CLI step (`repcollapse data|train|extract|analyze ...`),
skipped when its marker says it is complete with the same inputs.

A marker (``OUT/cells/<cell>.json``) is written last, after the step succeeded, and records the
cell's inputs (its fingerprint): a cell whose inputs changed (a seed added, another layer
stride) runs again, and the steps themselves skip what is already done (complete stages,
checkpoints in the store, cached metrics). While a cell runs, ``<cell>.running`` holds the pid
and start time, so `study status` can tell running from interrupted cells.

Every step runs in its own process by default (as in `repcollapse demo`: the analysis steps never
import torch); tests run them in this process (``in_process_executor``) to inject faults.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repcollapse.store_schema.manifest import write_json_atomic
from repcollapse.study.config import StudyConfig, StudyError
from repcollapse.study.executors import Executor, subprocess_executor
from repcollapse.study.plan import WHOLE, Cell, Shard, plan_cells
from repcollapse.timefmt import fmt_duration

# Prior cost of one unit of each cell kind, in seconds of SmolLM2-135M at the demo budget on a
# 2-core CPU (the SmolLM2 half of studies/cpu-small.toml, 2026-12-06, docs/study.md "Cost": a
# trained and evaluated stage ~60 s, extraction ~10 s and metrics ~5 s a checkpoint at a
# 36-example probe and 7 layers). The ETA scales them by the ratio of measured to prior time of
# the cells run so far, so only their proportions matter.
PRIOR_S: dict[str, float] = {
    "data": 5.0,
    "base": 50.0,
    "train": 60.0,
    "extract": 10.0,
    "metrics": 5.0,
    "report": 12.0,
}
FAMILY_COST: dict[str, float] = {"gemma3-270m": 1.3}
"""Cost of a family's cells relative to SmolLM2-135M's (1 when unlisted): a Gemma 3 270M stage
took ~70 s against SmolLM2's ~60 s and its seed-0 shard 16.5 min (docs/study.md, "Cost"; its
forward pass alone is 2.3x SmolLM2's a token, but the study's cells are not all forward)."""


@dataclass(frozen=True)
class Layout:
    """Where everything of a study lives under its output directory."""

    out: Path

    @property
    def cells(self) -> Path:
        return self.out / "cells"

    @property
    def data(self) -> Path:
        return self.out / "data"

    def family(self, fam: str) -> Path:
        return self.out / "families" / fam

    def base(self, fam: str) -> Path:
        return self.family(fam) / "base"

    def view(self, fam: str, seed: int) -> Path:
        return self.family(fam) / "views" / f"s{seed}"

    def runs(self, fam: str) -> Path:
        return self.family(fam) / "runs"

    def store(self, fam: str) -> Path:
        return self.out / "stores" / f"{fam}.zarr"

    def tables(self, fam: str) -> Path:
        return self.out / "tables" / fam

    @property
    def merged(self) -> Path:
        return self.out / "merged"

    def marker(self, cell: Cell) -> Path:
        return self.cells / cell.marker_name

    def running(self, cell: Cell) -> Path:
        return self.cells / (cell.marker_name[: -len(".json")] + ".running")


def read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


class StudyRun:
    def __init__(
        self,
        study: StudyConfig,
        out: Path,
        shard: Shard = WHOLE,
        *,
        executor: Executor = subprocess_executor,
        log: Callable[[str], None] = print,
        device: str | None = None,
    ) -> None:
        self.study, self.shard, self.executor, self.log = study, shard, executor, log
        self.device = device
        self.L = Layout(Path(out).resolve())
        self.cells = plan_cells(study, shard)

    # -- what each cell runs and what it depends on --------------------------------------------

    def base_for(self, fam: str, seed: int) -> Path:
        """The base directory a seed's chains start from. The study's first seed uses the base
        itself (its evaluation is the base's row in the store); every other seed a view of it
        (hard links of every file but behavior.json), because `train run` evaluates the base
        with the run's seed and would otherwise overwrite the base's behaviour seed by seed."""
        if seed == self.study.seeds[0]:
            return self.L.base(fam)
        return self.L.view(fam, seed)

    def _make_view(self, fam: str, seed: int) -> None:
        view, base = self.L.view(fam, seed), self.L.base(fam)
        if (view / "manifest.json").is_file():
            return
        if view.exists():
            shutil.rmtree(view)
        tmp = view.with_name(view.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        from repcollapse.train.stage_plan import copy_stage  # no torch: plain file copies

        copy_stage(base, tmp, skip=("behavior.json", "manifest.json"))
        shutil.copy2(base / "manifest.json", tmp / "manifest.json")  # last: complete
        tmp.rename(view)

    def stage_dirs(self, cell: Cell) -> list[Path]:
        run = self.L.runs(cell.family) / cell.run_name
        return sorted(p.parent for p in run.glob("*/[0-9][0-9]-*/manifest.json"))

    def checkpoints(self, fam: str) -> list[Path]:
        trains = [c for c in self.cells if c.kind == "train" and c.family == fam]
        return [self.L.base(fam), *[d for c in trains for d in self.stage_dirs(c)]]

    def fingerprint(self, cell: Cell) -> dict[str, Any]:
        st = self.study
        if cell.kind == "data":
            return {"seed": st.data_seed, "probe": st.probe_per_domain, "dir": st.data_dir}
        if cell.kind == "base":
            return {"model": self._family(cell.family).model}
        if cell.kind == "train":
            return {
                "model": self._family(cell.family).model,
                "config": cell.config,
                "seed": cell.seed,
                "budget": st.budget,
                "set": list(st.train_overrides()),
                "base": str(self.base_for(cell.family, cell.seed)),
            }
        if cell.kind == "extract":
            dtype = self._family(cell.family).hidden_dtype
            return {
                "checkpoints": [str(p) for p in self.checkpoints(cell.family)],
                "token_cap_per_span": st.token_cap_per_span,
                # only where not the default: float16 extractions done before keep their marker
                **({"hidden_dtype": dtype} if dtype != "float16" else {}),
                **({"codec": st.codec} if st.codec != "lossless" else {}),
            }
        if cell.kind == "metrics":
            # the upstream marker's inputs and finish time: a re-run upstream cell re-runs this
            return {"layer_stride": st.layer_stride, "extract": self._upstream("extract", cell)}
        families = sorted({c.family for c in self.cells if c.kind == "metrics"})
        return {f: self._upstream("metrics", Cell("metrics", f)) for f in families}

    def _upstream(self, kind: str, cell: Cell) -> Any:
        m = read_marker(self.L.marker(Cell(kind, cell.family))) or {}
        return [m.get("inputs"), m.get("finished")]

    def _family(self, label: str) -> Any:
        return next(f for f in self.study.families if f.label == label)

    def is_complete(self, cell: Cell) -> bool:
        m = read_marker(self.L.marker(cell))
        return m is not None and m.get("inputs") == _plain(self.fingerprint(cell))

    def execute(self, cell: Cell) -> None:
        """Run one cell's CLI step(s)."""
        st, L, run = self.study, self.L, self.executor
        log = L.out / "study.log"
        dev = ["--device", self.device] if self.device else []
        if cell.kind == "data":
            if st.data_dir is None:
                run(
                    [
                        "data",
                        "build",
                        "--out",
                        str(L.data),
                        "--seed",
                        str(st.data_seed),
                        "--probe-per-domain",
                        str(st.probe_per_domain),
                    ],
                    log,
                )
            else:  # a given data directory: used in place, through a link
                given = Path(st.data_dir).resolve()
                if L.data.resolve() == given:
                    return
                if L.data.is_symlink():
                    L.data.unlink()
                elif L.data.exists():  # a built data directory is never removed silently
                    raise StudyError(
                        f"data.dir: expected {L.data} to be absent or a link, found a data "
                        "directory built by an earlier run (remove it, or use another --out)"
                    )
                L.data.symlink_to(given, target_is_directory=True)
        elif cell.kind == "base":
            model = self._family(cell.family).model
            run(["train", "base", "--model", model, "--out", str(L.base(cell.family)), *dev], log)
        elif cell.kind == "train":
            base = self.base_for(cell.family, cell.seed)
            if base != L.base(cell.family):
                self._make_view(cell.family, cell.seed)
            args = [
                "train",
                "run",
                cell.config,
                "--out",
                str(L.runs(cell.family) / cell.run_name),
                "--base",
                str(base),
                "--data",
                str(L.data),
                "--budget",
                st.budget,
                "--seed",
                str(cell.seed),
                "--reuse",
                str(L.runs(cell.family)),
                "--quiet",
                *dev,
            ]
            for o in st.train_overrides():
                args += ["--set", o]
            run(args, log)
        elif cell.kind == "extract":
            ckpts = [str(p) for p in self.checkpoints(cell.family)]
            extract_args = [
                "extract",
                "--store",
                str(L.store(cell.family)),
                "--probe",
                str(L.data / "probe.jsonl"),
                "--token-cap-per-span",
                str(st.token_cap_per_span),
                "--hidden-dtype",
                self._family(cell.family).hidden_dtype,
                "--codec",
                st.codec,
                "--no-progress",
            ]
            run([*extract_args, *(["--device", self.device] if self.device else []), *ckpts], log)
            run(["store", "validate", str(L.store(cell.family))], log)
        elif cell.kind == "metrics":
            from repcollapse.cli.demo import analysed_layers

            layers = [str(x) for x in analysed_layers(L.store(cell.family), st.layer_stride)]
            store, tables = str(L.store(cell.family)), str(L.tables(cell.family))
            run(["analyze", "metrics", store, "--out", tables, "--layers", *layers], log)
        else:
            from repcollapse.study.merge import merge_and_report  # pandas, read only here

            fams = [c.family for c in self.cells if c.kind == "metrics"]
            inputs = [(st.name, f, L.tables(f)) for f in fams]
            merge_and_report(inputs, L.out, tables=L.merged, run=run, log=log)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> Path:
        L = self.L
        L.cells.mkdir(parents=True, exist_ok=True)
        meta = {"name": self.study.name, "source": self.study.source, "budget": self.study.budget}
        write_json_atomic(L.cells / "study.json", meta)
        t_start = time.perf_counter()
        spent_s = spent_prior = 0.0
        todo = [c for c in self.cells if not self.is_complete(c)]
        n = len(self.cells)
        self.log(
            f"[study {self.study.name}] shard {self.shard}: {n} cells, "
            f"{n - len(todo)} complete, {len(todo)} to run -> {L.out}"
        )
        pending_prior = sum(_prior(c) for c in todo)
        for i, cell in enumerate(self.cells, start=1):
            if self.is_complete(cell):  # decided now: an upstream cell may have just run
                self.log(f"[study {i}/{n}] {cell.id}: complete, skipped")
                continue
            running = L.running(cell)
            write_json_atomic(running, {"pid": os.getpid(), "started": time.time()})
            t0 = time.perf_counter()
            try:
                self.execute(cell)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    running.unlink()
            dt = time.perf_counter() - t0
            write_json_atomic(
                L.marker(cell),
                {
                    "cell": cell.id,
                    "inputs": _plain(self.fingerprint(cell)),
                    "elapsed_s": round(dt, 3),
                    "finished": time.time(),
                },
            )
            spent_s += dt
            spent_prior += _prior(cell)
            pending_prior -= _prior(cell)
            # measured/prior once a cell of some weight ran (a 0-second data step says nothing)
            ratio = spent_s / spent_prior if spent_prior >= 60 else 1.0
            eta = max(0.0, pending_prior) * ratio  # a cell found stale later was not counted
            self.log(
                f"[study {i}/{n}] {cell.id}: done in {fmt_duration(dt)}; elapsed "
                f"{fmt_duration(time.perf_counter() - t_start)}, ETA {fmt_duration(eta)}"
            )
        report = L.out / "report.html"
        self.log(f"[study {self.study.name}] complete: {report}")
        return report


def _prior(cell: Cell) -> float:
    return (
        FAMILY_COST.get(cell.family, 1.0)
        * PRIOR_S[cell.kind]
        * (cell.stages if cell.kind in ("train", "extract", "metrics") else 1)
    )


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def run_study(
    study: StudyConfig,
    out: str | Path,
    shard: Shard = WHOLE,
    *,
    executor: Executor = subprocess_executor,
    log: Callable[[str], None] = print,
    device: str | None = None,
) -> Path:
    """Run (or continue) the cells of ``shard``; returns the report path."""
    return StudyRun(study, Path(out), shard, executor=executor, log=log, device=device).run()

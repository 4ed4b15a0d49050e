"""The whole instrument end to end, as a recipe of CLI steps (read it top to bottom).

    repcollapse demo [--out demo_out] [--model DIR] [--budget demo|paper] [--set KEY=VALUE ...]
                     [--uncertainty]

1. data build         probe corpus, pools, future tasks
2. train base         checkpoint 0 (embedded SmolLM2-135M-Instruct unless --model)
3. train run          sequence A, the matched-token general-SFT control, and A with 10% replay
4. extract            every checkpoint into one store (teacher-forced probe)
5. store validate
6. analyze metrics    -> tables/*.parquet (no torch in that process)
7. analyze stats, figures, report -> report.html
8. summary            the stage table, behaviour with SEs, geometry (intervals: --uncertainty)

Every step runs as its own process (so the analysis steps never import torch) and is skipped
when its output is already complete, so re-running is cheap and an interrupted demo continues
where it stopped. The steps' output goes to ``<out>/demo.log``, whose path is printed first; the
console gets one line per step and per trained or extracted checkpoint, with the elapsed time
and an ETA (repcollapse/cli/demo_progress.py).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from repcollapse.cli.demo_progress import (
    ExtractLogWatch,
    ManifestWatch,
    Progress,
    fmt_duration,
    run_step,
)


@dataclass(frozen=True)
class DemoSettings:
    out: Path
    model: str | None = None
    budget: str = "demo"
    probe_per_domain: int = 8
    """Probe records per domain (48 in all). The forward pass of extraction is the cost: on the
    real corpus 12 per domain (9,468 tokens) took 30-40 s a checkpoint on 2 cores."""
    token_cap_per_span: int = 250
    layer_stride: int = 5
    """Analyse every k-th layer and the last (SmolLM2: 0, 5, ..., 30 of 31); 1 = every layer.
    The store holds every layer either way, so `analyze metrics --layers` can add the rest
    later without re-extracting. Derivation costs ~0.8 s per (checkpoint, layer): all 31 layers
    took 318 s of an earlier demo's 31 minutes; 7 layers take ~70 s."""
    sequences: tuple[str, ...] = ("A", "control", "A_replay10")
    seed: int = 0
    train_overrides: tuple[str, ...] = ()
    """``--set KEY=VALUE`` strings passed to every ``train run`` (e.g. a smaller budget)."""
    future_tasks: tuple[str, ...] = ("sentiment",)
    """Future tasks of the evaluation; ('all',) = every task of the data directory. Default:
    sentiment only. Measured on SmolLM2 at the demo budget, cipher and base_convert score 0 at
    every adaptation step of every checkpoint (no information), and each costs ~15 s of the
    ~95 s evaluation of every checkpoint."""

    uncertainty: bool = False
    """Pass --uncertainty to `analyze metrics`: jackknife intervals for the geometry (the summary
    prints them). Off by default: derivation costs ~(G + 1) times as much (docs/metrics.md)."""

    def __post_init__(self) -> None:
        if self.budget not in ("demo", "paper"):
            raise ValueError(f"DemoSettings.budget: expected demo or paper, found {self.budget!r}")
        if self.probe_per_domain < 4:
            raise ValueError(
                f"DemoSettings.probe_per_domain: expected >= 4, found {self.probe_per_domain}"
            )
        if self.layer_stride < 1:
            raise ValueError(f"DemoSettings.layer_stride: expected >= 1, found {self.layer_stride}")
        if not self.future_tasks:
            raise ValueError("DemoSettings.future_tasks: expected at least one name or 'all'")


def _command(args: list[str]) -> list[str]:
    """The process of one CLI step (a function, so a test can run something cheaper)."""
    return [sys.executable, "-m", "repcollapse.cli.main", *args]


def _run(
    progress: Progress,
    step: str,
    args: list[str],
    log: Path,
    watch: Callable[[], list[str]] | None = None,
) -> float:
    """Run one CLI step in its own process; raise DemoStepError with the log tail on failure."""
    shown = f"repcollapse {shlex.join(args)}"
    return run_step(progress, step, _command(args), shown, log, watch)


def _overrides(settings: DemoSettings) -> list[str]:
    out = []
    if settings.future_tasks != ("all",):
        names = ", ".join(f'"{t}"' for t in settings.future_tasks)
        out.append(f"budget.{settings.budget}.eval.future_tasks=[{names}]")
    return out + list(settings.train_overrides)


def analysed_layers(store: Path, stride: int) -> list[int]:
    """Every ``stride``-th layer of the store and its last (the input of the unembedding)."""
    from repcollapse.store_schema.reader import StoreReader

    n_layers = StoreReader(store).n_layers
    return sorted(set(range(0, n_layers, stride)) | {n_layers - 1})


def checkpoint_dirs(runs: Path) -> list[Path]:
    """Complete checkpoint directories (those with a manifest), in training order."""
    return sorted(p.parent for p in runs.glob("*/*/*/manifest.json"))


def print_summary(tables: Path) -> None:
    """The demo's closing summary: the stage table (means, as the paper prints it), then each
    checkpoint's behavioural numbers with their standard error and n, and the geometry with its
    interval where `analyze metrics --uncertainty` computed one."""
    from repcollapse.analyze.report.console import console_summary
    from repcollapse.analyze.report.html import stage_table

    print("\nStage table (paper Table 4 form; one seed: point estimates, uncertainty below):")
    print(stage_table(tables).to_string(index=False))
    print("")
    print("\n".join(console_summary(tables)))


def run_demo(settings: DemoSettings) -> Path:
    out = settings.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "demo.log"
    data, base, runs = out / "data", out / "base", out / "runs"
    store, tables, report = out / "store.zarr", out / "tables", out / "report.html"
    timings: dict[str, float] = {}

    run_data = not (data / "MANIFEST.json").exists()
    run_base = not (base / "manifest.json").exists()
    steps = [
        *(["data"] if run_data else []),
        *(["base"] if run_base else []),
        *(f"train {seq}" for seq in settings.sequences),
        *("extract", "validate", "metrics", "stats", "figures", "report"),
    ]
    progress = Progress(steps)
    progress.log_path(log)
    progress.skipped([s for s, run in (("data", run_data), ("base", run_base)) if not run])

    if run_data:
        timings["data"] = _run(
            progress,
            "data",
            [
                "data",
                "build",
                "--out",
                str(data),
                "--seed",
                str(settings.seed),
                "--probe-per-domain",
                str(settings.probe_per_domain),
            ],
            log,
        )
    if run_base:
        args = [
            "train",
            "base",
            "--out",
            str(base),
            "--seed",
            str(settings.seed),
        ]  # evaluated by the first `train run`, with exactly its evaluation settings
        if settings.model:
            args += ["--model", settings.model]
        timings["base"] = _run(progress, "base", args, log)
    for seq in settings.sequences:
        # One run directory per config (mitigated variants share the sequence name). train run
        # skips stages whose checkpoint is complete, so this is cheap on a re-run.
        timings[f"train {seq}"] = _run(
            progress,
            f"train {seq}",
            [
                "train",
                "run",
                seq,
                "--out",
                str(runs / seq),
                "--base",
                str(base),
                "--data",
                str(data),
                "--budget",
                settings.budget,
                "--seed",
                str(settings.seed),
                # the control's and the replay chain's first stage equal A's: linked, not retrained
                "--reuse",
                str(runs),
                *[a for o in _overrides(settings) for a in ("--set", o)],
            ],
            log,
            ManifestWatch(runs / seq),
        )
    ckpts = [base, *checkpoint_dirs(runs)]
    # extract skips checkpoints already complete in the store
    timings["extract"] = _run(
        progress,
        "extract",
        [
            "extract",
            "--store",
            str(store),
            "--probe",
            str(data / "probe.jsonl"),
            "--token-cap-per-span",
            str(settings.token_cap_per_span),
            *map(str, ckpts),
        ],
        log,
        ExtractLogWatch(log, len(ckpts)),
    )
    timings["validate"] = _run(progress, "validate", ["store", "validate", str(store)], log)
    layers = [str(x) for x in analysed_layers(store, settings.layer_stride)]
    timings["metrics"] = _run(
        progress,
        "metrics",
        [
            "analyze",
            "metrics",
            str(store),
            "--out",
            str(tables),
            "--layers",
            *layers,
            *(["--uncertainty"] if settings.uncertainty else []),
        ],
        log,
    )
    timings["stats"] = _run(progress, "stats", ["analyze", "stats", str(tables)], log)
    timings["figures"] = _run(
        progress, "figures", ["analyze", "figures", str(tables), "--out", str(out / "figures")], log
    )
    timings["report"] = _run(
        progress, "report", ["analyze", "report", str(tables), "--out", str(report)], log
    )

    print_summary(tables)
    total = sum(timings.values())
    print(
        "\nStep times: "
        + ", ".join(f"{k} {fmt_duration(v)}" for k, v in timings.items())
        + f"; total {fmt_duration(total)}"
    )
    print(f"\nreport: {report}")
    return report

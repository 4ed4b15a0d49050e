"""`repcollapse study`: the experimental matrix as one resumable command (docs/study.md).

    repcollapse study STUDY.toml [--shard i/n] [--out DIR] [--device cpu|cuda]
    repcollapse study status STUDY.toml [--shard i/n] [--out DIR]
    repcollapse study report DIR [DIR ...] [--out DIR]
    repcollapse study publish OUT [OUT ...] [--study STUDY.toml] --out DEST
    repcollapse study compare REF NEW [--out CSV]

`study publish` copies a finished study's tables, figures and report to DEST (for git: the
stores stay behind; several OUTs are the shards of one study, merged and reported first) with an ENVIRONMENT.md (versions, machine, wall time per cell) and a
README.md (the stage table beside the paper's, the claims and their verdicts).

A study's output defaults to study_out/<name>. `study report` merges the tables of study output
directories (or tables directories) from any number of shards and machines, then runs the
stats, figures and report over them; the stores are not needed. `study compare` checks a
re-run (a whole study or one shard) against a reference, such as a published result.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        nargs="+",
        metavar="STUDY.toml | status STUDY.toml | report DIR... | publish OUT | compare REF NEW",
        help="run a study, list its cells' state, merge shards' tables into one report, or "
        "package a finished study for git",
    )
    parser.add_argument(
        "--shard",
        default=None,
        metavar="i/n",
        help="run (or list) only the i-th of n deterministic slices (by family and seed)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default study_out/<name>; for report: study_report; for "
        "publish: docs/results/<name>; for compare: a CSV of the stage-table comparison)",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument(
        "--study",
        type=Path,
        default=None,
        help="for publish: the STUDY.toml the directories ran (default: the first one's)",
    )
    parser.set_defaults(handler=_study)


def _out(args: argparse.Namespace, name: str) -> Path:
    return args.out if args.out is not None else Path("study_out") / name


def _study(args: argparse.Namespace) -> int:
    from repcollapse.study import Shard, StudyError, load_study

    target = list(args.target)
    if target[0] == "report":
        return _report(target[1:], args)
    if target[0] == "publish":
        return _publish(target[1:], args)
    if target[0] == "compare":
        return _compare(target[1:], args)
    if target[0] == "status":
        if len(target) != 2:
            raise StudyError("study status: expected one STUDY.toml, found " + repr(target[1:]))
        from repcollapse.study.status import cell_states, format_status

        study = load_study(target[1])
        print(format_status(cell_states(study, _out(args, study.name), Shard.parse(args.shard))))
        return 0
    if len(target) != 1:
        raise StudyError(f"study: expected one STUDY.toml, found {target!r}")
    from repcollapse.study import run_study

    study = load_study(target[0])
    shard = Shard.parse(args.shard)
    out = _out(args, study.name)
    out.mkdir(parents=True, exist_ok=True)
    if Path(target[0]).resolve() != (out / "STUDY.toml").resolve():
        shutil.copyfile(target[0], out / "STUDY.toml")  # the study travels with its output
    from repcollapse.study.executors import StepFailed

    try:
        run_study(study, out, shard, device=args.device)
    except StepFailed as e:  # the step's own log tail says why; re-running continues here
        print(f"repcollapse study: {e}", file=sys.stderr)
        return 1
    return 0


def _report(dirs: list[str], args: argparse.Namespace) -> int:
    from repcollapse.study import StudyError, merge_and_report, study_inputs
    from repcollapse.study.executors import StepFailed

    if not dirs:
        raise StudyError("study report: expected one or more study output directories, found none")
    out = args.out if args.out is not None else Path("study_report")
    out.mkdir(parents=True, exist_ok=True)
    inputs = study_inputs(dirs)
    try:
        merge_and_report(inputs, out)
    except StepFailed as e:
        print(f"repcollapse study report: {e}", file=sys.stderr)
        return 1
    print(
        f"merged {len(inputs)} tables directories -> {out / 'tables'}; report {out / 'report.html'}"
    )
    return 0


def _publish(dirs: list[str], args: argparse.Namespace) -> int:
    from repcollapse.study import StudyError, load_study
    from repcollapse.study.publish import publish

    if not dirs:
        raise StudyError("study publish: expected one or more study output directories, found none")
    outs = [Path(d) for d in dirs]
    toml = args.study if args.study is not None else outs[0] / "STUDY.toml"
    if not toml.is_file():
        raise StudyError(f"study publish: expected {toml} (a study's --out), found none")
    study = load_study(toml)
    dest = args.out if args.out is not None else Path("docs/results") / study.name
    publish(study, outs, dest)
    print(f"published {study.name} -> {dest}")
    return 0


def _compare(dirs: list[str], args: argparse.Namespace) -> int:
    from repcollapse.study import StudyError
    from repcollapse.study.compare import compare

    if len(dirs) != 2:
        raise StudyError(
            "study compare: expected a reference and a re-run (two tables directories, study "
            f"outputs or published results), found {dirs!r}"
        )
    c = compare(*dirs)
    print("\n".join(c.lines()))
    if args.out is not None:
        c.within.to_csv(args.out, index=False)
        print(f"stage-table comparison -> {args.out}")
    return 0

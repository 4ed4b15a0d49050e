"""Package a finished study for git: its tables, figures, report and an account of how it ran.

    repcollapse study publish OUT --dest docs/results/<name>

writes, from a study output directory (the run's ``--out``):

    STUDY.toml        the study as it ran
    tables/           the merged Parquet/JSON tables (stats, claims, stage table included)
    figures/          the report's PNG figures
    report.html       the self-contained report
    ENVIRONMENT.md    library versions, machine, code version, wall time per cell, load
    README.md         the stage table beside the paper's, the claims and their verdicts

The stores are not copied (they are the large part; the tables are what the report reads).
README.md keeps any text between ``<!-- notes -->`` and ``<!-- /notes -->`` of an earlier
README.md in ``dest``, so an author's reading of the results survives a re-publish; everything
else in it is generated from the tables.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from repcollapse.analyze.stats.stage_table import QUANTITIES, interval_cell
from repcollapse.study.config import StudyConfig, StudyError
from repcollapse.study.plan import plan_cells
from repcollapse.study.runner import Layout, read_marker
from repcollapse.timefmt import fmt_duration

LIBRARIES: tuple[str, ...] = (
    "repcollapse",
    "torch",
    "transformers",
    "peft",
    "trl",
    "numpy",
    "zarr",
    "xarray",
    "dask",
    "pandas",
    "pyarrow",
    "duckdb",
    "scikit-learn",
    "statsmodels",
    "scipy",
    "numcodecs",
    "altair",
    "vl-convert-python",
    "jinja2",
)
PAPER_TABLE4: dict[str, dict[str, float]] = {
    # The paper's Table 4 (target, effective rank, anisotropy, future) and Table 8 (CKA, logit
    # entropy, LoRA overlap) for sequence A of its 1B-scale model; scores in points (0-100).
    "base": dict(target=54.2, erank=0.74, aniso=0.08, cka=1.00, entropy=4.34, future=71.0),
    "general": dict(
        target=62.8, erank=0.71, aniso=0.10, cka=0.93, entropy=4.12, overlap=0.24, future=69.4
    ),
    "math": dict(
        target=67.5, erank=0.66, aniso=0.13, cka=0.86, entropy=3.88, overlap=0.32, future=66.8
    ),
    "code": dict(
        target=66.9, erank=0.63, aniso=0.15, cka=0.80, entropy=3.74, overlap=0.39, future=64.9
    ),
    "safety": dict(
        target=70.1, erank=0.58, aniso=0.19, cka=0.72, entropy=3.21, overlap=0.51, future=60.7
    ),
}
_NOTES = re.compile(r"<!-- notes -->.*?<!-- /notes -->", re.S)
_PAPER_KEY: dict[str, str] = {  # stage-table quantity -> its key in PAPER_TABLE4
    "target_score": "target",
    "erank_norm": "erank",
    "aniso_centered": "aniso",
    "cka_base": "cka",
    "entropy": "entropy",
    "lora_overlap_prev": "overlap",
    "future_score": "future",
}
_README_HEADER: dict[str, str] = {  # the README spells out what the report's table abbreviates
    "aniso_centered": "Anisotropy",
    "cka_base": "CKA to base",
    "entropy": "Logit entropy",
    "lora_overlap_prev": "LoRA overlap",
}
_DIGITS: dict[str, int] = {"aniso_centered": 4}  # centred anisotropy is small: one more digit
_COLUMNS: list[tuple[str, str, str, int]] = [  # stage-table quantity, paper key, header, digits
    (q, _PAPER_KEY.get(q, q), _README_HEADER.get(q, head), _DIGITS.get(q, 3))
    for q, head in QUANTITIES.items()
]


def _markers(out: Path) -> dict[str, dict]:
    """Every complete cell of a study output directory: cell id -> its marker."""
    found = {}
    for f in sorted(Layout(out).cells.glob("*.json")):
        m = read_marker(f)
        if f.name != "study.json" and m and "cell" in m:
            found[str(m["cell"])] = m
    return found


def _check_complete(study: StudyConfig, outs: Sequence[Path]) -> None:
    """Every cell of the study complete in one of ``outs`` (the shards of one study, or one
    whole run), and every shard's own extraction and analysis complete for its families."""
    done = {out: _markers(out) for out in outs}
    missing = [
        c.id
        for c in plan_cells(study)
        if c.kind != "report" and not any(c.id in d for d in done.values())
    ]
    for out, d in done.items() if len(outs) > 1 else ():
        fams = {cid.split("/")[1] for cid in d if cid.startswith("train/")}
        missing += [
            f"{kind}/{fam} in {out}"
            for fam in sorted(fams)
            for kind in ("extract", "metrics")
            if f"{kind}/{fam}" not in d and f"{kind}/{fam}" not in missing
        ]
    if missing:
        where = outs[0] if len(outs) == 1 else f"{len(outs)} directories"
        raise StudyError(
            f"study publish: expected every cell of {study.name} complete in {where}, found "
            f"{len(missing)} missing ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})"
        )
    if len(outs) == 1 and not (outs[0] / "report.html").is_file():
        raise StudyError(f"study publish: expected {outs[0] / 'report.html'}, found none")


def publish(study: StudyConfig, outs: str | Path | Sequence[str | Path], dest: str | Path) -> Path:
    """Copy a complete study's tables, figures and report to ``dest`` and write its
    ENVIRONMENT.md and README.md; returns ``dest``. ``outs``: the study's output directory, or
    the output directories of its shards, whose tables are merged and reported here first (as
    `study report` does)."""
    outs = [Path(outs)] if isinstance(outs, str | Path) else [Path(o) for o in outs]
    dest = Path(dest)
    _check_complete(study, outs)
    if len(outs) == 1:
        src = outs[0]
        tables = Layout(src).merged
    else:
        from repcollapse.study.merge import merge_and_report, study_inputs

        src = dest.parent / f".{dest.name}.build"
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir(parents=True)
        tables = merge_and_report(study_inputs(outs), src)
    dest.mkdir(parents=True, exist_ok=True)
    for sub in ("tables", "figures"):
        shutil.rmtree(dest / sub, ignore_errors=True)
    shutil.copytree(tables, dest / "tables")
    (dest / "figures").mkdir()
    for png in sorted((src / "figures").glob("*.png")):
        shutil.copy2(png, dest / "figures" / png.name)
    shutil.copy2(src / "report.html", dest / "report.html")
    study_file = Path(study.source)
    shutil.copy2(
        study_file if study_file.is_file() else outs[0] / "STUDY.toml", dest / "STUDY.toml"
    )
    (dest / "ENVIRONMENT.md").write_text(environment_md(study, outs, tables), encoding="utf-8")
    old = (dest / "README.md").read_text(encoding="utf-8") if (dest / "README.md").is_file() else ""
    kept = _NOTES.search(old)
    notes = kept.group(0) if kept else "<!-- notes -->\n<!-- /notes -->"
    (dest / "README.md").write_text(readme_md(study, dest / "tables", notes), encoding="utf-8")
    if len(outs) > 1:
        shutil.rmtree(src, ignore_errors=True)
    return dest


# -- ENVIRONMENT.md -------------------------------------------------------------------------------


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> str:
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        return f"{kb / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        return "unknown"


def cell_times(outs: Sequence[Path]) -> pd.DataFrame:
    """One row per complete cell of every directory: run (the directory's name), cell id, kind,
    family, elapsed seconds (from its marker)."""
    rows = []
    for out in outs:
        for cid, m in _markers(out).items():
            parts = cid.split("/")
            rows.append(
                dict(
                    run=out.name,
                    cell=cid,
                    kind=parts[0],
                    family=parts[1] if len(parts) > 1 else "",
                    elapsed_s=float(m.get("elapsed_s", np.nan)),
                )
            )
    return pd.DataFrame(rows, columns=["run", "cell", "kind", "family", "elapsed_s"])


def _load_summary(outs: Sequence[Path]) -> str:
    loads = []
    for out in outs:  # written by a wrapper that samples /proc/loadavg, when present
        log = out / "loadavg.log"
        if log.is_file():
            loads += [float(ln.split()[1]) for ln in log.read_text().splitlines() if ln.strip()]
    if not loads:
        return "not recorded"
    return (
        f"1-minute load average sampled every minute ({len(loads)} samples): "
        f"median {np.median(loads):.2f}, max {max(loads):.2f} (2.00 = both cores busy)"
    )


def _code_versions(tables: Path) -> list[str]:
    versions = set()
    for prov in tables.glob("provenance*.json"):
        try:
            data = json.loads(prov.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for item in data if isinstance(data, list) else [data]:
            if isinstance(item, dict) and item.get("code_version"):
                versions.add(str(item["code_version"]))
    return sorted(versions)


def _stats_version(tables: Path) -> str:
    """The code version ``analyze stats`` recorded in stats_inputs.json (a study's statistics may
    be re-run by a later commit than its cells, e.g. after a dated revision of the rule)."""
    try:
        rec = json.loads((tables / "stats_inputs.json").read_text())
    except (OSError, json.JSONDecodeError):
        return "unknown"
    return str(rec.get("code_version") or "unknown (recorded before stats kept it)")


def environment_md(study: StudyConfig, outs: Sequence[Path], tables: Path) -> str:
    times = cell_times(outs)
    lines = [
        f"# Environment of the study `{study.name}`",
        "",
        f"- Code version (from the stores' provenance): {', '.join(_code_versions(tables)) or 'unknown'}",
        f"- Statistics (claims, stage table, regression) computed by: {_stats_version(tables)}",
        f"- Machine: {_cpu()}, {os.cpu_count()} CPUs visible, {_memory_gib()} memory, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        f"- Load during the run: {_load_summary(outs)}",
        f"- Output directories: {', '.join(o.name for o in outs)}",
        f"- Wall time, every cell: **{fmt_duration(times['elapsed_s'].sum())}** "
        f"({times['elapsed_s'].sum():.0f} s)",
        "",
        "## Libraries",
        "",
        "| library | version |",
        "|---|---|",
        *[f"| {lib} | {_version(lib)} |" for lib in LIBRARIES],
        "",
        "## Wall time per family and kind of cell (seconds)",
        "",
    ]
    fam = times[times["family"] != ""].pivot_table(
        index="family", columns="kind", values="elapsed_s", aggfunc="sum"
    )
    fam["total"] = fam.sum(axis=1)
    lines += _md_table(fam.reset_index(), digits=0)
    lines += ["", "## Wall time per cell (seconds)", ""]
    lines += _md_table(
        times[["run", "cell", "elapsed_s"]] if len(outs) > 1 else times[["cell", "elapsed_s"]],
        digits=1,
    )
    return "\n".join(lines) + "\n"


# -- README.md ------------------------------------------------------------------------------------


def _md_table(df: pd.DataFrame, digits: int = 3) -> list[str]:
    def fmt(v: object) -> str:
        if isinstance(v, float | np.floating):
            return "–" if not np.isfinite(v) else f"{v:.{digits}f}"
        return str(v)

    head = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return [head, rule, *body]


def stage_rows(st: pd.DataFrame, family: str) -> list[str]:
    """The stage table of one family in the paper's Table 4/8 shape: base, then each plain
    chain's stages; a mean over seeds with its 95% t interval in brackets."""
    fam = st[(st["model_family"] == family) & (st["mitigation"] == "none")]
    fam = pd.concat(
        [fam[fam["stage_index"] == 0].head(1), _by_sequence(fam[fam["stage_index"] > 0])]
    )
    rows = []
    for _, r in fam.iterrows():
        label = (
            "base"
            if r["stage_index"] == 0
            else f"{r['sequence']}/{r['stage_index']:02d}-{r['stage']}"
        )
        cells = [
            interval_cell(r[q], r[f"{q}_ci_low"], r[f"{q}_ci_high"], d) for q, _, _, d in _COLUMNS
        ]
        rows.append(f"| {label} | {int(r['n_seeds'])} | " + " | ".join(cells) + " |")
    head = "| Checkpoint | Seeds | " + " | ".join(h for _, _, h, _ in _COLUMNS) + " |"
    return [head, "|" + "---|" * (len(_COLUMNS) + 2), *rows]


def _by_sequence(df: pd.DataFrame) -> pd.DataFrame:
    order = {"A": 0, "control": 1, "D": 2}
    return (
        df.assign(_o=df["sequence"].map(lambda s: order.get(s, 9)))
        .sort_values(["_o", "sequence", "stage_index"])
        .drop(columns="_o")
    )


def paper_rows() -> list[str]:
    head = "| Checkpoint (paper, sequence A) | " + " | ".join(h for _, _, h, _ in _COLUMNS) + " |"
    rows = []
    for stage, vals in PAPER_TABLE4.items():
        cells = []
        for _, key, _, _ in _COLUMNS:
            v = vals.get(key)
            if v is None:
                cells.append("–")
            elif key in ("target", "future"):
                cells.append(f"{v / 100:.3f}")  # points -> the [0, 1] scale of our table
            else:
                cells.append(f"{v:.2f}")
        rows.append(f"| {stage} | " + " | ".join(cells) + " |")
    return [head, "|" + "---|" * (len(_COLUMNS) + 1), *rows]


def claim_rows(claims: pd.DataFrame) -> list[str]:
    """The claims table, then each claim's detail (why no interval, a family left out, the
    regression's controls) as a list under it."""
    rows = [
        "| Claim | Effect [95% CI] | MDE | δ | Seeds | Families | Verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    details = []
    for _, c in claims.iterrows():
        ci = (
            f"[{c['ci_low']:.4f}, {c['ci_high']:.4f}]"
            if np.isfinite(c["ci_low"]) and np.isfinite(c["ci_high"])
            else "(no interval)"
        )
        eff = f"{c['effect']:.4f}" if np.isfinite(c["effect"]) else "–"
        mde_ = f"{c['mde']:.4f}" if np.isfinite(c["mde"]) else "–"
        rows.append(
            f"| `{c['claim']}` | {eff} {ci} | {mde_} | {c['delta']:g} | {int(c['n_seeds'])} | "
            f"{int(c['n_families'])} | **{c['verdict']}** |"
        )
        if isinstance(c.get("detail"), str) and c["detail"]:
            details.append(f"- `{c['claim']}`: {c['detail']}")
    return [*rows, *([""] + details if details else [])]


def readme_md(study: StudyConfig, tables: Path, notes: str) -> str:
    st = pd.read_parquet(tables / "stage_table.parquet")
    claims = pd.read_parquet(tables / "claims.parquet")
    lines = [
        f"# Study `{study.name}`: results",
        "",
        f"Families {', '.join(f.label for f in study.families)}; sequences "
        f"{', '.join(study.sequences)}; seeds {', '.join(map(str, study.seeds))}; budget "
        f"`{study.budget}` with the overrides in STUDY.toml. Reproduce with "
        f"`repcollapse study STUDY.toml` after the README's set-up; wall time and versions are in "
        "ENVIRONMENT.md; report.html is the full report (self-contained, works offline).",
        "",
        notes,
        "",
        "## Stage table (mean over seeds [95% t interval over seeds])",
        "",
        "Scores are accuracies in [0, 1]; the geometry is the mean over the analysed layers "
        "(docs/metrics.md, layer convention) on the whole probe.",
        "",
    ]
    for fam in sorted(st["model_family"].unique()):
        lines += [f"### {fam}", "", *stage_rows(st, fam), ""]
    lines += [
        "### The paper (for comparison; a 1B-scale model at a GPU budget)",
        "",
        *paper_rows(),
        "",
        "## Claims (docs/claims.md: the rule, written before these numbers were seen)",
        "",
        *claim_rows(claims),
        "",
    ]
    return "\n".join(lines)

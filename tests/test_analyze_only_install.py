"""The analysis side installs and runs with `pip install '.[analyze]'` alone: no torch, no
transformers, nothing of the model stack (README, docs/guide.md). A fresh virtual environment,
the package built from a copy of the sources, then the CLI chain a user runs on an archived
store: validate, metrics, query, stats, figures, report. About 40 s (the install is most of it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from repcollapse.analyze.registry import names

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    assert result.returncode == 0, f"{cmd[:4]}: exit {result.returncode}\n{result.stderr[-3000:]}"
    return result.stdout


def test_the_analysis_chain_runs_in_an_analyze_only_environment(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy: pip builds in the source tree (build/, *.egg-info)
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "repcollapse", src / "repcollapse", ignore=ignore)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    py, cli = venv / "bin" / "python", str(venv / "bin" / "repcollapse")
    _run([str(py), "-m", "pip", "install", "-q", f"{src}[analyze]"], tmp_path)

    work = tmp_path / "work"
    work.mkdir()
    stack = ("torch", "transformers", "peft", "trl")
    probe = f"import importlib.util as u; print([m for m in {stack!r} if u.find_spec(m)])"
    assert _run([str(py), "-c", probe], work).strip() == "[]"  # the check below means something
    spec = "SyntheticSpec(n_layers=3, n_tokens=600, n_features=16, token_chunk=128)"
    make = f"from repcollapse.store_schema.testing import *; make_synthetic_store('s.zarr', {spec})"
    _run([str(py), "-c", make], work)
    assert "valid s.zarr" in _run([cli, "store", "validate", "s.zarr"], work)
    _run([cli, "analyze", "metrics", "s.zarr", "--out", "tables"], work)
    sql = "select count(distinct metric) as n from metrics"
    out = _run([cli, "query", sql, "--tables", "tables"], work)
    assert out.split()[1] == str(len(names())), out  # every registered metric has rows
    _run([cli, "analyze", "stats", "tables"], work)
    _run([cli, "analyze", "figures", "tables", "--out", "figs"], work)
    _run([cli, "analyze", "report", "tables", "--out", "report.html", "--figures", "figs"], work)
    assert (work / "tables" / "metrics.parquet").stat().st_size > 0
    assert list((work / "figs").glob("*.png")) and (work / "report.html").stat().st_size > 10_000

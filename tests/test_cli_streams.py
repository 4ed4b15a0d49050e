"""Results on stdout, errors on stderr (so `... > file` never captures an error), with exit 2
for bad input given on the command line and 1 for a run that failed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from repcollapse.cli.main import main


@pytest.fixture
def tables(tmp_path: Path) -> Path:
    root = tmp_path / "tables"
    root.mkdir()
    pd.DataFrame({"metric": ["erank"], "value": [1.5]}).to_parquet(root / "metrics.parquet")
    return root


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_query_errors_never_reach_stdout(
    tables: Path, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        (["SELECT nope FROM metrics", "--tables", str(tables)], 1),  # the query failed
        (["SELECT 1", "--tables", str(tables / "missing")], 2),  # bad --tables
        (["COPY metrics TO 'x.csv'", "--tables", str(tables)], 2),  # refused statement
    ]
    for argv, code in cases:
        assert main(["query", *argv, "--format", fmt]) == code, argv
        out, err = capsys.readouterr()
        assert out == "", (argv, out)
        assert err.startswith("repcollapse query: ") and len(err.strip().splitlines()) == 1
    assert (
        main(["query", "SELECT value FROM metrics", "--tables", str(tables), "--format", fmt]) == 0
    )
    out, err = capsys.readouterr()
    assert "1.5" in out and err == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["analyze", "stats", "{missing}"],
        ["analyze", "figures", "{missing}", "--out", "{tmp}/f"],
        ["analyze", "report", "{missing}", "--out", "{tmp}/r.html"],
        ["analyze", "metrics", "{missing}", "--out", "{tmp}/t"],
        ["analyze", "stats", "{tmp}", "--layer", "top"],
        ["analyze", "figures", "{tmp}", "--out", "{tmp}/f", "--scale-factor", "0"],
    ],
)
def test_analyze_bad_input_exit_2_on_stderr_only(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a.format(missing=tmp_path / "nowhere", tmp=tmp_path) for a in argv]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip() and "Traceback" not in err

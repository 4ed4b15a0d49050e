"""analyze and store_schema must never pull in the model stack (README: the analysis side installs without torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "transformers", "peft", "trl", "repcollapse.train", "repcollapse.extract")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)


def test_import_analyze_and_store_schema_leaves_no_model_stack() -> None:
    code = (
        "import sys, pkgutil, importlib\n"
        "from repcollapse import analyze, store_schema\n"
        "for pkg in (analyze, store_schema):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        f"bad = sorted(m for m in {FORBIDDEN!r} if m in sys.modules)\n"
        "assert not bad, f'imported: {bad}'\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_check_can_fail() -> None:
    """Guard against a vacuous boundary test: importing torch is detected."""
    code = "import sys, torch\nassert 'torch' not in sys.modules\n"
    assert _run(code).returncode != 0

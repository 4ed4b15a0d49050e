"""`study status`: which cells of a study (or of one shard) are done, running or missing."""

from __future__ import annotations

import os
import time
from pathlib import Path

from repcollapse.study.config import StudyConfig
from repcollapse.study.plan import WHOLE, Shard
from repcollapse.study.runner import StudyRun, read_marker


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cell_states(study: StudyConfig, out: Path, shard: Shard = WHOLE) -> list[tuple[str, str, str]]:
    """(cell id, state, detail) for every cell of ``shard``, in execution order. States: done,
    running (its process is alive), interrupted (a running marker whose process is gone),
    changed (done with other inputs: it will run again), missing."""
    run = StudyRun(study, out, shard)
    rows = []
    for cell in run.cells:
        marker, running = read_marker(run.L.marker(cell)), read_marker(run.L.running(cell))
        if running is not None:
            since = time.time() - float(running.get("started", time.time()))
            pid = int(running.get("pid", -1))
            state = "running" if _alive(pid) else "interrupted"
            rows.append((cell.id, state, f"pid {pid}, started {since:.0f} s ago"))
        elif marker is not None and run.is_complete(cell):
            rows.append((cell.id, "done", f"{marker.get('elapsed_s', 0):.0f} s"))
        elif marker is not None:
            rows.append((cell.id, "changed", "inputs differ from the STUDY.toml: runs again"))
        else:
            rows.append((cell.id, "missing", ""))
    return rows


def format_status(rows: list[tuple[str, str, str]]) -> str:
    width = max((len(r[0]) for r in rows), default=10)
    lines = [f"{cid:<{width}}  {state:<11} {detail}".rstrip() for cid, state, detail in rows]
    counts: dict[str, int] = {}
    for _, state, _ in rows:
        counts[state] = counts.get(state, 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    return "\n".join([*lines, f"{len(rows)} cells: {summary}"])

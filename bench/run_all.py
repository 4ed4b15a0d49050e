"""`just bench`: every benchmark in one run, one line per figure, written to bench/results.json.

    python -m bench.run_all [--only extract|metrics|codecs|concurrent] [--model DIR] [--workdir DIR]

Each benchmark module exposes ``run(workdir, **options) -> dict`` whose ``lines`` entry is a list
of (label, value, unit, ratio_or_None, target_or_None). Figures of one benchmark are measured side
by side in the same process, so their ratios compare like with like.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS = {
    "extract": "bench.bench_extract",
    "metrics": "bench.bench_metrics",
    "codecs": "bench.bench_codecs",
    "concurrent": "bench.bench_concurrent",
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def format_line(
    name: str, label: str, value: float, unit: str, ratio: float | None, target: str | None
) -> str:
    text = f"{name:<8} {label:<48} {value:>12.4g} {unit:<10}"
    if ratio is not None:
        text += f" ratio {ratio:6.2f}x"
    if target:
        text += f"  (target {target})"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append")
    parser.add_argument(
        "--model",
        default="embedded",
        help="HF model dir for the extraction benchmark, 'embedded' (SmolLM2, default) or 'tiny'",
    )
    parser.add_argument("--workdir", default="bench/work")
    parser.add_argument("--out", default="bench/results.json")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results = {
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "benchmarks": {},
    }
    out = Path(args.out)
    if out.exists():  # keep figures of benchmarks not re-run this time
        results["benchmarks"] = json.loads(out.read_text()).get("benchmarks", {})
    for name in args.only or list(BENCHMARKS):
        module = importlib.import_module(BENCHMARKS[name])
        t0 = time.perf_counter()
        model = None if args.model == "tiny" else args.model
        kwargs = {"model": model} if name in ("extract", "codecs") else {}
        result = module.run(workdir / name, **kwargs)
        result["wall_s"] = time.perf_counter() - t0
        result["machine"] = results["machine"]
        results["benchmarks"][name] = result
        for line in result["lines"]:
            print(format_line(name, *line), flush=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

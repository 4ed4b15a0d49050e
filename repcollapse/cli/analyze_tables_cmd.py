"""`repcollapse analyze stats|figures|report`: thin handlers over the tables directory.

Every option is a field of a config dataclass (``StatsConfig`` with its ``LayerConvention``,
``FiguresConfig``, ``ReportConfig``), turned into flags by ``repcollapse.cli.flags``: the
defaults and help texts live on the dataclasses. Results go to stdout; errors to stderr, exit 2
for bad input (a missing or malformed table, a bad flag value, a report's missing inputs) and
1 for a run that failed.
"""

from __future__ import annotations

import argparse
import sys

from repcollapse.cli.flags import add_flags, from_args

_STATS_DESCRIPTION = (
    "Regression, stage and order effects, Pareto and falsification tables from the metric "
    "tables, written beside them ({name}.parquet and stats_notes.json)."
)
_FIGURES_DESCRIPTION = (
    "Every figure its inputs allow, as PNG, HTML and the data drawn (name.data.csv), with "
    "figures.json listing each one or why it was skipped."
)
_REPORT_DESCRIPTION = (
    "One self-contained HTML page from the tables, the statistics 'analyze stats' wrote "
    "beside them and the figures of 'analyze figures' (--figures; default: the 'figures' "
    "directory beside the page). Missing statistics or figures are an error unless "
    "--compute-missing, which computes them and says so in the page."
)


def register(sub: argparse._SubParsersAction) -> None:  # of LazyFlagsParser
    """Add the stats, figures and report commands to the ``analyze`` sub-parsers."""
    p = sub.add_parser(
        "stats",
        help="regressions, stage/order effects, Pareto, falsification tables",
        description=_STATS_DESCRIPTION,
    )
    p.add_argument(
        "tables_dir", metavar="TABLES_DIR", help="directory written by 'analyze metrics'"
    )
    p.defer(_stats_flags)
    p.set_defaults(handler=main_stats)

    p = sub.add_parser(
        "figures", help="figures (HTML and PNG) from the tables", description=_FIGURES_DESCRIPTION
    )
    p.add_argument("tables_dir", metavar="TABLES_DIR")
    p.add_argument("--out", required=True, help="directory for the figures")
    p.defer(_figures_flags)
    p.defer(_stats_flags)
    p.set_defaults(handler=main_figures)

    p = sub.add_parser(
        "report", help="one self-contained HTML report", description=_REPORT_DESCRIPTION
    )
    p.add_argument("tables_dir", metavar="TABLES_DIR")
    p.add_argument(
        "--out", default="report.html", help="report file, or a directory (default report.html)"
    )
    p.add_argument(
        "--figures", metavar="DIR", help="figures written by 'analyze figures' (default: see above)"
    )
    p.defer(_report_flags)
    p.defer(_stats_flags)
    p.set_defaults(handler=main_report)


# Flags are added when the command is parsed (LazyFlagsParser): the configs import the analysis.
def _stats_flags(p: argparse.ArgumentParser) -> None:
    from repcollapse.analyze.stats.config import StatsConfig

    add_flags(p.add_argument_group("statistics (StatsConfig)"), StatsConfig)


def _figures_flags(p: argparse.ArgumentParser) -> None:
    from repcollapse.analyze.report.style import FiguresConfig

    add_flags(p.add_argument_group("figures (FiguresConfig)"), FiguresConfig)


def _report_flags(p: argparse.ArgumentParser) -> None:
    from repcollapse.analyze.report.html import ReportConfig

    add_flags(p.add_argument_group("report (ReportConfig)"), ReportConfig)


def _bad_input() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input (exit 2); anything else is a failed run for cli.main."""
    from repcollapse.analyze.report.html import MissingReportInputs
    from repcollapse.analyze.tables.read import TablesError
    from repcollapse.store_schema.problems import UsageError

    return (FileNotFoundError, TablesError, UsageError, MissingReportInputs)


def _fail(command: str, exc: BaseException, code: int) -> int:
    print(f"repcollapse analyze {command}: {exc}", file=sys.stderr)
    return code


def _stats_config(args: argparse.Namespace):  # noqa: ANN202 (StatsConfig, imported lazily)
    from repcollapse.analyze.stats.config import StatsConfig

    return from_args(StatsConfig, args)


def main_stats(args: argparse.Namespace) -> int:
    """`repcollapse analyze stats DIR`."""
    from repcollapse.analyze.stats.regression import run_stats

    try:
        out = run_stats(args.tables_dir, _stats_config(args))
    except _bad_input() as exc:
        return _fail("stats", exc, 2)
    for name, df in out.items():
        if name != "notes":
            print(f"{name}.parquet: {len(df)} rows")
    for section, note in out["notes"].itertuples(index=False):
        print(f"  [{section}] {note}")
    if "claims" in out:
        from repcollapse.analyze.stats.claims_report import claims_lines

        print("claims:")
        for line in claims_lines(out["claims"]):
            print(f"  {line}")
    return 0


def main_figures(args: argparse.Namespace) -> int:
    """`repcollapse analyze figures DIR --out OUT`."""
    import json
    from pathlib import Path

    from repcollapse.analyze.report.figures import make_figures
    from repcollapse.analyze.report.style import FiguresConfig

    try:
        make_figures(
            args.tables_dir,
            args.out,
            _stats_config(args),
            figures=from_args(FiguresConfig, args),
        )
    except _bad_input() as exc:
        return _fail("figures", exc, 2)
    for f in json.loads((Path(args.out) / "figures.json").read_text()):
        print(f.get("skipped") or f"{f['name']}: {Path(args.out) / f['png']}")
    return 0


def main_report(args: argparse.Namespace) -> int:
    """`repcollapse analyze report DIR --out OUT` (OUT: an .html file or a directory)."""
    from pathlib import Path

    from repcollapse.analyze.report.html import ReportConfig, build_report

    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        out = out / "report.html"
    try:
        path = build_report(
            args.tables_dir,
            out,
            _stats_config(args),
            figures_dir=args.figures,
            report=from_args(ReportConfig, args),
        )
    except _bad_input() as exc:
        return _fail("report", exc, 2)
    print(f"report: {path}")
    return 0

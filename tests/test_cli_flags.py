"""Flags generated from config dataclasses: defaults round-trip, every field type parses, a bad
value is a usage error naming the field."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from repcollapse.analyze.report.html import ReportConfig
from repcollapse.analyze.report.style import FiguresConfig
from repcollapse.analyze.stats.config import StatsConfig
from repcollapse.analyze.tables.read import LayerConvention
from repcollapse.cli.flags import add_flags, from_args
from repcollapse.store_schema.problems import UsageError


@pytest.mark.parametrize("cls", [StatsConfig, FiguresConfig, ReportConfig, LayerConvention])
def test_defaults_round_trip(cls: type) -> None:
    p = argparse.ArgumentParser()
    add_flags(p, cls)
    assert from_args(cls, p.parse_args([])) == cls()


def test_every_field_type_parses() -> None:
    p = argparse.ArgumentParser()
    add_flags(p, StatsConfig)
    args = p.parse_args(
        ["--layer", "7", "--include-embeddings", "--predictors", "a", "b", "--alpha", "0.1"]
    )
    cfg = from_args(StatsConfig, args)
    assert cfg.convention == LayerConvention(layer=7, include_embeddings=True)
    assert cfg.predictors == ("a", "b") and cfg.alpha == 0.1
    assert from_args(StatsConfig, p.parse_args(["--layer", "middle"])).convention.layer == "middle"
    q = argparse.ArgumentParser()
    add_flags(q, FiguresConfig)
    assert from_args(FiguresConfig, q.parse_args(["--no-html"])).html is False


def test_help_and_default_come_from_the_field() -> None:
    @dataclass(frozen=True)
    class C:
        width: int = field(default=3, metadata={"help": "how wide", "flag": "--w"})

    p = argparse.ArgumentParser()
    add_flags(p, C)
    text = p.format_help()
    assert "--w" in text and "how wide (default: 3)" in text
    assert from_args(C, p.parse_args(["--w", "5"])) == C(5)


def test_bad_value_is_a_usage_error_naming_the_field() -> None:
    p = argparse.ArgumentParser()
    add_flags(p, FiguresConfig)
    with pytest.raises(UsageError, match=r"FiguresConfig.scale_factor.*-1") as err:
        from_args(FiguresConfig, p.parse_args(["--scale-factor", "-1"]))
    assert err.value.exit_code == 2


def test_building_the_cli_imports_no_analysis_stack() -> None:
    """The configs' flags are added when their command is parsed (LazyFlagsParser): starting
    any command must not pay for pandas, scipy or altair (measured: 5.8 s of imports before)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from repcollapse.cli.main import build_parser\n"
        "build_parser()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pandas', 'scipy', 'altair', 'xarray', 'torch') or m.startswith('repcollapse.analyze'))\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

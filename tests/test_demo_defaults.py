"""`repcollapse demo`'s flags default to DemoSettings, the one place the demo's sizes are set.

The flags once carried their own defaults (probe 12, layer stride 3), so a change of
DemoSettings did not reach the command users run."""

from __future__ import annotations

from pathlib import Path

from repcollapse.cli.demo import DemoSettings
from repcollapse.cli.main import build_parser


def test_demo_flags_default_to_demo_settings() -> None:
    args = build_parser().parse_args(["demo"])
    d = DemoSettings(out=Path("demo_out"))
    assert args.probe_per_domain == d.probe_per_domain
    assert args.layer_stride == d.layer_stride
    assert args.token_cap_per_span == d.token_cap_per_span
    assert args.budget == d.budget and args.seed == d.seed

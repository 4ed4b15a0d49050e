"""`repcollapse train`: materialise the base checkpoint and run sequential post-training chains.

    repcollapse train base [--model DIR|ORG/NAME] --out DIR [--eval-data DIR]
    repcollapse train run CONFIG --out RUN_DIR [--base DIR] [--data DIR] [--budget demo|paper]
                          [--seed N] [--set KEY=VALUE ...] [--no-eval]
    repcollapse train configs

CONFIG is a TOML path or the name of a shipped config (repcollapse/train/configs/<name>.toml). Heavy
imports (torch, transformers, trl) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="train_cmd", metavar="COMMAND", required=True)

    b = sub.add_parser("base", help="write checkpoint 0 (the embedded SmolLM2, or --model DIR)")
    b.add_argument(
        "--model",
        type=Path,
        default=None,
        help="local HF causal-LM directory, a model id (org/name) already in the local "
        "Hugging Face cache (HF_HOME; read offline, nothing is downloaded), or an embedded "
        "model: smollm2-135m-instruct (the default) or gemma3-270m (Gemma 3 270M base; Gemma "
        "Terms of Use)",
    )
    b.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    b.add_argument(
        "--eval-data", type=Path, default=None, help="data directory: also write behavior.json"
    )
    b.add_argument("--budget", default="demo", help="evaluation sizes of this budget (demo|paper)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    b.set_defaults(handler=_base)

    r = sub.add_parser("run", help="train a sequence of stages from a TOML config")
    r.add_argument(
        "config", help="TOML file or shipped config name (see `repcollapse train configs`)"
    )
    r.add_argument(
        "--out", type=Path, required=True, help="run directory (RUN_DIR/<sequence>/NN-stage)"
    )
    r.add_argument(
        "--base",
        type=Path,
        default=None,
        help="base checkpoint (default RUN_DIR/base, made if missing)",
    )
    r.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data directory (default RUN_DIR/data, built if missing)",
    )
    r.add_argument("--budget", default="demo", help="demo (CPU minutes) or paper (GPU)")
    r.add_argument("--seed", type=int, default=None, help="override the config's seed")
    r.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. mitigation.replay_fraction=0.2 (repeatable)",
    )
    r.add_argument(
        "--reuse",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="other runs' directory: a stage identical to a complete stage there (same parent "
        "lineage, examples, settings and seed) is linked, not retrained (repeatable)",
    )
    r.add_argument("--no-eval", action="store_true", help="skip behavioural evaluation")
    r.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(handler=_run)

    c = sub.add_parser("configs", help="list the shipped configs")
    c.set_defaults(handler=_configs)


def _cpu_friendly_threads() -> None:
    """Passive OpenMP waiting: on a shared CPU, spinning threads slow a forward pass ~6x (measured:
    8x60 tokens of SmolLM2, 17 s spinning vs 2.8 s passive at load 6 on 2 cores). Must be set
    before torch is first imported, hence here at the start of each handler."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _base(args: argparse.Namespace) -> int:
    _cpu_friendly_threads()
    from repcollapse.train.base import materialize_base
    from repcollapse.train.config_checks import ConfigError
    from repcollapse.train.config_load import load_budget

    try:
        budget = load_budget(args.budget)
    except ConfigError as e:
        print(f"repcollapse train base: {e}", file=sys.stderr)
        return 2
    t0 = time.time()
    existed = (args.out / "manifest.json").is_file()
    out = materialize_base(
        args.out,
        args.model,
        eval_data=args.eval_data,
        budget=budget,
        device=args.device,
        seed=args.seed,
    )
    verb = "already complete" if existed else f"written in {time.time() - t0:.1f}s"
    print(f"base checkpoint {out}: {verb}")
    return 0


def _run(args: argparse.Namespace) -> int:
    _cpu_friendly_threads()
    from repcollapse.store_schema.problems import SchemaError
    from repcollapse.train.base import materialize_base
    from repcollapse.train.config_checks import ConfigError
    from repcollapse.train.config_load import load_config
    from repcollapse.train.runner import run_sequence

    try:
        cfg = load_config(args.config, budget=args.budget, seed=args.seed, overrides=args.set)
    except ConfigError as e:
        print(f"repcollapse train run: {e}", file=sys.stderr)
        return 2
    from repcollapse.train.hf import resolve_device

    resolve_device(args.device)  # --device cuda without a GPU: exit 2 before anything is written
    for flag, path in (("--out", args.out), ("--base", args.base), ("--data", args.data)):
        if path is not None and path.exists() and not path.is_dir():
            print(
                f"repcollapse train run: {flag} {path}: expected a directory, found a file",
                file=sys.stderr,
            )
            return 1
    base = args.base or args.out / "base"
    if not (base / "manifest.json").is_file():
        if args.base is not None:
            print(
                f"repcollapse train run: --base {base} has no manifest.json (incomplete)",
                file=sys.stderr,
            )
            return 2
        print(f"materialising the embedded base model into {base}")
        materialize_base(base, None, device=args.device, seed=cfg.seed)
    data = args.data or args.out / "data"
    if not (data / "pools").is_dir():
        if args.data is not None:
            print(
                f"repcollapse train run: --data {data} has no pools/ (run repcollapse data build)",
                file=sys.stderr,
            )
            return 2
        from repcollapse.cli.main import main as cli_main

        print(f"building the data directory {data}")
        rc = cli_main(["data", "build", "--out", str(data)])
        if rc:
            return rc
    t0 = time.time()
    print(
        f"sequence {cfg.sequence} ({cfg.budget.name} budget, mitigation {cfg.mitigation.name}, "
        f"seed {cfg.seed}): {len(cfg.expanded_stages())} stages -> {args.out / cfg.sequence}"
    )
    try:
        run_sequence(
            cfg,
            args.out,
            base,
            data,
            device=args.device,
            evaluate=not args.no_eval,
            progress=not args.quiet,
            reuse=args.reuse,
        )
    except SchemaError as e:
        print(f"repcollapse train run: {e}", file=sys.stderr)
        return 2
    print(f"sequence {cfg.sequence} done in {time.time() - t0:.0f}s")
    return 0


def _configs(args: argparse.Namespace) -> int:
    import tomllib

    from repcollapse import train

    folder = Path(train.__file__).resolve().parent / "configs"
    for p in sorted(folder.glob("*.toml")):
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
        stages = " -> ".join(f"{s['name']}({s['kind']})" for s in raw.get("stages", []))
        print(f"{p.stem:20s} {stages}")
    return 0

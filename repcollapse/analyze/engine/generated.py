"""The generated-output probe (``extract --generate N``), analysed beside the teacher-forced one.

The paper's secondary analysis asks whether the model's own outputs lose diversity along a
chain. For every checkpoint with a complete generated sub-store this module reports, in one
long-form table ``generated.parquet`` (same columns as metrics.parquet):

- text diversity of the sampled completions, per domain and overall (``domain='all'``), at
  ``layer = -1`` and ``span = 'response'``: ``distinct_1``, ``distinct_2``, ``distinct_3``
  (distinct n-grams / all n-grams over whitespace words, pooled over the domain's completions,
  Li et al. 2016) and ``completion_tokens`` (mean completion length in tokens);
- the moment metrics of the sub-store (spectrum and anisotropy by default), computed by the
  ordinary one-pass runner on that sub-store (cached in ``OUT/generated/<sub-store>``). Its
  ``response`` span rows are the generated tokens' states; the ``prompt`` span repeats each
  prompt once per sample, so selections that include prompts (``span = 'all'``, the domains)
  weigh every prompt token N times: read ``span = 'response'`` for output diversity.

Every sub-store holds one checkpoint with its own tokens, so metrics against a reference
checkpoint (CKA, drift) and the collapse index (z-scored across checkpoints) do not apply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from repcollapse.analyze import registry
from repcollapse.analyze.engine.runner import run_metrics
from repcollapse.analyze.engine.tokens import ALL
from repcollapse.analyze.options import Options
from repcollapse.analyze.tables.write import metrics_frame
from repcollapse.store_schema.reader import StoreReader
from repcollapse.store_schema.schema import GENERATED_GROUP

TEXT_METRIC_VERSION = 1
DISTINCT_N: tuple[int, ...] = (1, 2, 3)
MOMENT_METRICS: tuple[str, ...] = (
    "erank",
    "erank_norm",
    "pr",
    "pr_norm",
    "topk_var_1",
    "topk_var_10",
    "alpha_req",
    "rankme",
    "aniso_uncentered",
    "aniso_centered",
)
"""Default moment metrics of a generated sub-store: those that need no reference checkpoint."""
TABLE = "generated.parquet"


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Distinct n-grams / all n-grams over whitespace words of ``texts`` (0.0 if none)."""
    grams = [
        tuple(words[i : i + n])
        for words in (t.split() for t in texts)
        for i in range(len(words) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


def text_rows(sub: StoreReader, checkpoint: str) -> list[dict[str, Any]]:
    """distinct-n and mean completion length of one sub-store's completions, per domain and
    overall."""
    completions = list(sub.attrs["completions"])
    coords = sub.token_coords(("example", "domain"))
    domain_of = dict(zip(coords["example"].tolist(), coords["domain"].tolist(), strict=True))
    missing = sorted({c["example"] for c in completions} - set(domain_of))
    if missing:
        raise ValueError(
            f"{sub.where}: completions {missing[:3]} have no tokens in the sub-store "
            "(expected every completion's example among its token coordinates)"
        )
    by_domain: dict[str, list[dict[str, Any]]] = {}
    for c in completions:
        by_domain.setdefault(domain_of[c["example"]], []).append(c)
    rows = []
    for domain, cs in [(ALL, completions), *sorted(by_domain.items())]:
        texts = [c["text"] for c in cs]
        n_tok = int(sum(c["n_tokens"] for c in cs))
        values = {f"distinct_{n}": distinct_n(texts, n) for n in DISTINCT_N}
        values["completion_tokens"] = n_tok / len(cs) if cs else float("nan")
        for metric, value in values.items():
            rows.append(
                {
                    "metric": metric,
                    "metric_version": TEXT_METRIC_VERSION,
                    "checkpoint": checkpoint,
                    "layer": -1,
                    "domain": domain,
                    "span": "response",
                    "value": float(value),
                    "n_tokens": n_tok,
                }
            )
    return rows


def run_generated(
    store: str | Path,
    out_dir: str | Path,
    *,
    metrics: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    options: Options | None = None,
    scheduler_address: str | None = None,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Analyse every complete generated sub-store of ``store``; write OUT/generated.parquet."""
    say = log or print
    source = StoreReader(store)
    groups = source.generated_groups()
    if not groups:
        raise ValueError(
            f"{store}: no generated-output probe (expected a '{GENERATED_GROUP}' group with "
            f"complete sub-stores; extract with --generate N to make one)"
        )
    out = Path(out_dir)
    names = list(metrics or MOMENT_METRICS)
    wanted = {m.name for m in registry.resolve(names) if m.kind != "derived"}
    frames = []
    for checkpoint, group in sorted(groups.items()):
        sub_out = out / GENERATED_GROUP / group.split("/")[-1]
        summary = run_metrics(
            store,
            sub_out,
            metrics=names,
            layers=layers,
            options=options,
            scheduler_address=scheduler_address,
            group=group,
            log=say,
        )
        sub = source.sub(group)
        text = metrics_frame(
            pd.DataFrame(text_rows(sub, checkpoint)),
            str(sub.attrs.get("store_id", "")),
            str(sub.attrs.get("model_family", "")),
            not (options or Options()).include_sinks,
        )
        moment = pd.read_parquet(summary.tables["metrics"])
        # the runner adds the collapse index; z-scored over one checkpoint it means nothing
        frames += [moment[moment["metric"].isin(wanted)], text]
    table = pd.concat(frames, ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out / TABLE, index=False)
    say(f"wrote {len(table)} rows for {len(groups)} generated sub-store(s) to {out / TABLE}")
    return table

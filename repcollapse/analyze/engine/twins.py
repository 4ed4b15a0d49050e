"""Checkpoints whose stored data are a copy of another's (repcollapse.extract.twins): analysed once.

`train run --reuse` links a stage shared by several sequences and extract copies its data
(``extraction_log`` entry ``copied_from``). Every metric of such a twin equals its source's when
the two have the same lineage (the same base, and parents that are the same checkpoint or
twins themselves): the same hidden states against the same references. The runner then skips
the twin in the passes and copies the source's cached rows under the twin's name
(``alias_twins``), so metrics.parquet still has a row for every checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from repcollapse.analyze.engine.cache import MetricCache


def twin_sources(
    log: Iterable[Mapping[str, Any]],
    parent: Mapping[str, str | None],
    base: Mapping[str, str | None],
    ckpts: Iterable[str],
) -> dict[str, str]:
    """Twin -> the analysed checkpoint whose rows it takes (a copy of a copy: the first)."""
    copied = {str(e["checkpoint"]): str(e["copied_from"]) for e in log if e.get("copied_from")}

    def root(c: str) -> str:
        seen = {c}
        while c in copied and copied[c] not in seen:
            c = copied[c]
            seen.add(c)
        return c

    def same_lineage(a: str | None, b: str | None) -> bool:
        if a is None or b is None:
            return a is None and b is None
        if root(a) != root(b) or base.get(a) != base.get(b):
            return False
        return a == b or same_lineage(parent.get(a), parent.get(b))

    wanted = set(ckpts)
    out = {}
    for c in copied:
        source = root(c)
        if c in wanted and source in wanted and source != c and same_lineage(c, source):
            out[c] = source
    return out


def alias_twins(cache: MetricCache, twins: Mapping[str, str]) -> None:
    """Every cached row of each source, under its twin's name (replacing the twin's own)."""
    for twin, source in twins.items():
        cache.add(twin, cache.rows(source).assign(checkpoint=twin), cache.done(source))

"""Refuse to analyse checkpoints whose stored data do not match their write-time checksums.

Only what this run will read is checked: the checkpoints with a metric to compute (not served by
the cache, not a twin) and the base and parent they are compared with. Their token variables,
LoRA factors, behaviour and unembedding head are checked before anything is computed
(``repcollapse.store_schema.checksums.verify_checkpoints``, the one ``store validate`` uses). ``hidden`` is
checked block by block as the passes read it (``verified_reader``): hashing what is read anyway
costs ~1 s per GB, a separate read of every block first would double the store's reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from repcollapse.store_schema.checksums import verify_checkpoints
from repcollapse.store_schema.problems import SchemaError
from repcollapse.store_schema.reader import BlockReader, StoreReader


def layers_to_read(
    ckpts: Sequence[str],
    layers: Sequence[int],
    n_layers: int,
    wanted: Sequence[Any],
    missing: Callable[[str, Any, int], bool],
    refs: Mapping[str, Mapping[str, str | None]],
) -> dict[str, list[int]]:
    """Checkpoint -> hidden layers this run reads from it (checkpoints it reads nothing of: absent).

    Moment metrics read their layers; function metrics the token variables and, at another
    temperature, the last layer; LoRA metrics the factors; derived ones read no store data.
    ``refs``: need -> reference per checkpoint (``cross_base`` -> base, ``cross_parent`` ->
    parent): a reference is read only by the metrics with that need.
    """
    by_kind = {k: [m for m in wanted if m.kind == k] for k in ("moment", "function", "lora")}
    out: dict[str, set[int]] = {}
    for c in ckpts:
        need = {layer for layer in layers if any(missing(c, m, layer) for m in by_kind["moment"])}
        if any(missing(c, m, -1) for m in by_kind["function"]):
            need.add(n_layers - 1)
        if not need and not any(missing(c, m, -1) for m in by_kind["lora"]):
            continue  # served by the cache, or a twin: nothing of it is read
        out.setdefault(c, set()).update(need)
        for need_name, ref in refs.items():  # a reference's rows, at the layers that use it
            uses = {
                layer
                for layer in need
                for m in by_kind["moment"]
                if need_name in m.needs and missing(c, m, layer)
            }
            if ref.get(c) and uses:
                out.setdefault(ref[c], set()).update(uses)
    return {c: sorted(v) for c, v in out.items()}


def verified_reader(
    store: StoreReader,
    checkpoints: Sequence[str],
    raw_index: Mapping[str, int],
    say: Callable[[str], None],
) -> BlockReader:
    """Check everything but ``hidden`` of ``checkpoints`` now; return the reader that checks
    each ``hidden`` block as the passes read it (the digests of every slot in ``raw_index``:
    a few strings per chunk, and no block is ever read unchecked)."""
    if checkpoints:
        found, unrecorded = verify_checkpoints(
            store.url, {c: [] for c in checkpoints}, group=store.group
        )
        _refuse(store.where, found, unrecorded, say)
    return store.hidden_blocks(verify=raw_index)


def _refuse(store: str, problems: list, unrecorded: list[str], say: Callable[[str], None]) -> None:
    """Raise SchemaError (a ValueError) naming each damaged checkpoint, variable and chunk."""
    if unrecorded:
        say(
            f"warning: no checksums recorded for {unrecorded} (written before checksums "
            "existed): their data are analysed unchecked"
        )
    if problems:
        bad = sorted({p.location.split(" variable ")[0] for p in problems})
        raise SchemaError(
            problems,
            f"refusing to analyse {', '.join(bad)} of {store}: stored data do not match the "
            "checksums recorded at extraction (re-extract those checkpoints into a new store, "
            "or pass --checkpoints without them)",
        )

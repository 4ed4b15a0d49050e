"""Creating the store, or checking that an existing one matches, before anything is written.

An existing store accepts a new checkpoint only if the probe corpus hash, the tokenizer's vocab
hash, the number of hidden layers, the hidden size, the vocabulary size, the token count and
every token coordinate are the same; otherwise extraction stops with a ``SchemaError`` naming
the store's value and this run's value, and the store is not touched.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from repcollapse.store_schema import codecs as C
from repcollapse.store_schema import schema as S
from repcollapse.store_schema.problems import Problem, SchemaError
from repcollapse.store_schema.store import (
    StoreLayout,
    as_str_array,
    consolidate,
    create_store,
    read_attrs,
    store_exists,
    store_lock,
)
from repcollapse.store_schema.writer import StoreWriter

TOPK = 20
LORA_RANK_CAPACITY = 64


@dataclass(frozen=True)
class Geometry:
    """What a model contributes to a store's shape."""

    n_layers: int
    """Stored hidden layers: embeddings + one per block."""
    n_features: int
    vocab_size: int
    n_blocks: int
    lora_modules: dict[str, tuple[int, int]]


def check_store(
    url: str | Path,
    *,
    group: str | None,
    probe_hash: str,
    tokenizer: Mapping[str, str],
    geometry: Geometry,
    coords: Mapping[str, np.ndarray],
    hidden_dtype: str = S.DEFAULT_HIDDEN_DTYPE,
    codec: str = C.DEFAULT_CODEC,
) -> None:
    """Raise SchemaError listing every mismatch between the store and this extraction."""
    attrs = read_attrs(url, group)
    g = zarr.open_group(store=str(url), mode="r", zarr_format=3, use_consolidated=False)
    if group:
        g = g[group]
    problems: list[Problem] = []

    def differ(where: str, stored: Any, ours: Any, kind: str, what: str) -> None:
        if stored != ours:
            problems.append(Problem(where, f"store has {stored!r}, {what} has {ours!r}", kind))

    differ(
        "attrs.probe_hash",
        attrs.get("probe_hash"),
        probe_hash,
        "probe_mismatch",
        "this probe corpus",
    )
    stored_tok = attrs.get("tokenizer") or {}
    stored_vocab = stored_tok.get("vocab_sha256") if isinstance(stored_tok, Mapping) else stored_tok
    differ(
        "attrs.tokenizer.vocab_sha256",
        stored_vocab,
        tokenizer["vocab_sha256"],
        "tokenizer_mismatch",
        "this checkpoint's tokenizer",
    )
    stored_codec = C.codec_of(attrs, str(url))  # an unknown codec: refused here
    # One codec per store: every checkpoint is read back with the same error budget.
    differ(
        f"attrs.{C.CODEC_ATTR}",
        stored_codec.name,
        C.parse_codec(codec, "--codec").name,
        "codec_mismatch",
        "this run (--codec)",
    )
    stored_dtype = C.logical_dtype(g, stored_codec)  # the array's: older stores record none
    differ(
        "hidden: dtype",
        stored_dtype,
        hidden_dtype,
        "hidden_dtype_mismatch",
        "this run (--hidden-dtype)",
    )
    _, n_layers, n_tokens, n_features = g["hidden"].shape
    differ(
        "hidden: layer",
        n_layers,
        geometry.n_layers,
        "layers_mismatch",
        "this model (blocks + embeddings)",
    )
    differ("hidden: feature", n_features, geometry.n_features, "hidden_size_mismatch", "this model")
    differ(
        "unembedding: vocab",
        g["unembedding"].shape[1],
        geometry.vocab_size,
        "vocab_mismatch",
        "this model",
    )
    n_ours = len(coords["position"])
    differ("hidden: token", n_tokens, n_ours, "token_count_mismatch", "this tokenization")
    if n_tokens == n_ours:
        for name, spec in S.TOKEN_COORDS.items():
            stored = np.asarray(g[name][:])
            ours = np.asarray(coords[name])
            if spec.dtype == "str":
                stored, ours = as_str_array(stored), as_str_array(ours)
            bad = np.flatnonzero(stored != ours)
            if len(bad):
                t = int(bad[0])
                problems.append(
                    Problem(
                        f"token coord '{name}'",
                        f"differs at {len(bad)} token(s), first at token {t}: store has {stored[t]!r}, "
                        f"this tokenization has {ours[t]!r}",
                        "token_coords_mismatch",
                    )
                )
    if problems:
        config = attrs.get("extraction_config", {})
        raise SchemaError(
            problems,
            f"refusing to write into {url}{'/' + group if group else ''} (created with "
            f"extraction_config {config}); use a new store or the same probe, model family and flags",
        )


def balanced_chunk(n_tokens: int, target: int) -> int:
    """The chunk size <= ``target`` that splits ``n_tokens`` into the fewest near-equal chunks.

    Zarr stores an edge chunk at full size, and hidden chunks are uncompressed: 4,792 tokens in
    chunks of 4,096 would take 8,192 tokens of disk; in two chunks of 2,396 they take 4,792.
    """
    n_chunks = -(-max(n_tokens, 1) // target)
    return -(-max(n_tokens, 1) // n_chunks)


def create_or_check(
    url: str | Path,
    *,
    group: str | None,
    geometry: Geometry,
    coords: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    token_chunk: int,
) -> bool:
    """Create the store if absent (True), else check it matches (False). Atomic across processes.

    The hidden dtype is ``attrs['hidden_dtype']`` (float16 where absent) and the codec
    ``attrs['hidden_codec']`` (lossless where absent): a new store is created with them, an
    existing store of another dtype or codec is refused.

    An existing store that matches is repaired first (``StoreWriter.repair``: the orphan tail of
    a killed reservation), so every later step, and every reader, sees consistent lengths. A
    killed creation leaves no store (repcollapse.store_schema.creation): it is created again here.
    """
    hidden_dtype = S.check_hidden_dtype(S.hidden_dtype_of(attrs), "attrs.hidden_dtype")
    codec = C.parse_codec(attrs.get(C.CODEC_ATTR, C.DEFAULT_CODEC), f"attrs.{C.CODEC_ATTR}").name
    with store_lock(url):
        if store_exists(url, group):
            check_store(
                url,
                group=group,
                probe_hash=attrs["probe_hash"],
                tokenizer=attrs["tokenizer"],
                geometry=geometry,
                coords=coords,
                hidden_dtype=hidden_dtype,
                codec=codec,
            )
            for action in StoreWriter(url, group=group).repair():
                print(f"repaired {url}: {action} (left by a killed extraction)", file=sys.stderr)
            return False
        n_tokens = len(coords["position"])
        layout = StoreLayout(
            n_layers=geometry.n_layers,
            n_features=geometry.n_features,
            n_tokens=n_tokens,
            vocab_size=geometry.vocab_size,
            topk=TOPK,
            n_blocks=geometry.n_blocks,
            lora_modules=geometry.lora_modules,
            lora_rank_capacity=LORA_RANK_CAPACITY,
            token_chunk=balanced_chunk(n_tokens, token_chunk),
            hidden_dtype=hidden_dtype,
            codec=codec,
        )
        create_store(url, layout, coords, attrs, group=group)
        return True


def update_attr_list(url: str | Path, group: str | None, key: str, entry: Any) -> None:
    """Append ``entry`` to the list attribute ``key`` (under the store lock, read fresh)."""
    with store_lock(url):
        g = zarr.open_group(store=str(url), mode="r+", zarr_format=3, use_consolidated=False)
        if group:
            g = g.require_group(group)
        g.attrs[key] = [*g.attrs.get(key, []), entry]
        consolidate(url)  # the attribute write replaced a zarr.json: refresh the snapshot


def update_attr_dict(url: str | Path, group: str, key: str, name: str, value: Any) -> None:
    """Set ``attrs[key][name] = value`` on ``group`` (under the store lock, read fresh)."""
    with store_lock(url):
        g = zarr.open_group(
            store=str(url), mode="r+", zarr_format=3, use_consolidated=False
        ).require_group(group)
        g.attrs[key] = {**dict(g.attrs.get(key, {})), name: value}
        consolidate(url)  # the attribute write replaced a zarr.json: refresh the snapshot

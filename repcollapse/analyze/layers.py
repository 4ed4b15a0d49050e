"""The layer convention, written once: which hidden layers a checkpoint-level number averages.

The store's hidden layers are 0..L: layer 0 is the embeddings, layers 1..L the outputs of the L
transformer blocks. LoRA never changes the embeddings, so a mean that took layer 0 in would only
dilute every change between checkpoints. Every checkpoint-level value - the collapse index's
layer -1 row (``metrics.collapse``) and the stats' and stage table's layer mean
(``tables.read.LayerConvention``) - averages the layers ``summary_layers`` returns, so the two
never summarise different layers.
"""

from __future__ import annotations

from collections.abc import Iterable

EMBEDDING_LAYER = 0
"""The embeddings' layer index in the store."""
FIRST_BLOCK_LAYER = 1
"""The first transformer block's output: the first layer a layer mean takes in."""


def summary_layers(layers: Iterable[int], include_embeddings: bool = False) -> list[int]:
    """The layers among ``layers`` that a layer mean averages, sorted: 1..L, plus layer 0 with
    ``include_embeddings``. Layer-free rows (layer -1) never enter. A selection holding only the
    embeddings gets them (better the embeddings than nothing; the caller's table says which
    layers it holds)."""
    present = sorted({int(x) for x in layers if int(x) >= EMBEDDING_LAYER})
    first = EMBEDDING_LAYER if include_embeddings else FIRST_BLOCK_LAYER
    chosen = [x for x in present if x >= first]
    return chosen or present


def describe(include_embeddings: bool = False) -> str:
    first = EMBEDDING_LAYER if include_embeddings else FIRST_BLOCK_LAYER
    return f"mean over layers {first}..L (layer {EMBEDDING_LAYER} = embeddings)"

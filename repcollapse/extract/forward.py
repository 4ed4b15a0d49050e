"""Teacher-forced forward passes and the chunk buffer that writes them to the store.

What runs. Each example is cut after its last stored token (``TokenizedExample.run_length``:
in a causal model the states of a token depend only on the tokens before it, so the cut changes
no stored value beyond float rounding, and the next-token target of the last stored token is
taken from the uncut sequence). Examples are grouped in windows of consecutive examples in store
order (about ``WINDOW_TOKENS`` stored tokens each); inside a window they are sorted by cut length
and batched ``batch_size`` at a time, so a batch pads to similar lengths, and the window's
outputs are put back in store order before they are yielded: a window is one contiguous store
range. Batches are padded on the right with an attention mask and explicit per-token
positions, so a token's states do not depend on the batch it is in (up to float rounding). The
batch composition is a function of the token plan and the batch size alone, so a resumed run
recomputes the same values. The hidden
states of every layer come from one forward of the decoder with ``output_hidden_states``; the
last stored layer is the decoder's ``last_hidden_state`` (after the final norm, the input of the
unembedding) whatever the model's ``hidden_states[-1]`` convention is.

``ChunkBuffer`` holds one token chunk per layer (and the token variables of that chunk) and
writes chunk-aligned blocks, optionally from a background thread while the next chunk fills
(then two chunks at most): memory stays flat in the number of batches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from repcollapse.extract.logits import LogitStatistics
from repcollapse.extract.tokens import TokenizedExample
from repcollapse.store_schema import schema as S
from repcollapse.store_schema.writer import StoreWriter

FLOAT16_MAX = 65504.0


def hidden_limit(dtype: np.dtype | str) -> float:
    """Largest |h| a store of that hidden dtype holds: 65,504 for float16; for float32 every
    finite value of the forward (which runs in float32 or bfloat16) fits, so only NaN/inf are
    refused."""
    return float(np.finfo(np.dtype(dtype)).max)


class HiddenRangeError(ValueError):
    """Hidden states that the store's dtype cannot hold: refused rather than stored as inf/NaN.

    A ValueError, so the CLI prints it as one message. A float16 store refuses |h| > 65,504;
    a family whose residual stream is that large (Gemma 3) is extracted into a store created
    with ``--hidden-dtype float32``, which refuses only non-finite values.
    """


WINDOW_TOKENS = 4096
"""Stored tokens per window of examples sorted by length (about one store chunk: a window's
outputs are held until the window is done, then handed to the chunk buffer)."""


def make_batches(
    examples: Sequence[TokenizedExample], batch_size: int
) -> list[list[TokenizedExample]]:
    """Consecutive groups of ``batch_size`` examples (store order is kept)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, found {batch_size}")
    return [list(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size)]


def run_length(ex: TokenizedExample, cut: bool) -> int:
    """Tokens of ``ex`` the forward runs: up to its last stored one, or all when not ``cut``."""
    return ex.run_length if cut else len(ex.input_ids)


def plan_windows(
    examples: Sequence[TokenizedExample],
    batch_size: int,
    *,
    window_tokens: int = WINDOW_TOKENS,
    cut: bool = True,
    by_length: bool = True,
) -> list[tuple[range, list[list[int]]]]:
    """(store-order example range, batches of example indices) per window.

    A window takes consecutive examples until it holds ``window_tokens`` stored tokens (at
    least one example). With ``by_length`` its examples are sorted by run length (stable, so
    ties keep store order) before being cut into batches; without it the batches are
    consecutive, as ``make_batches``."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, found {batch_size}")
    if window_tokens < 1:
        raise ValueError(f"window_tokens: expected a positive integer, found {window_tokens}")
    windows: list[tuple[range, list[list[int]]]] = []
    start = 0
    while start < len(examples):
        stop, kept = start, 0
        while stop < len(examples) and (stop == start or kept < window_tokens):
            kept += len(examples[stop].keep)
            stop += 1
        order = list(range(start, stop))
        if by_length:
            order.sort(key=lambda i: run_length(examples[i], cut))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        windows.append((range(start, stop), batches))
        start = stop
    return windows


def pad_batch(
    batch: Sequence[TokenizedExample], pad_id: int, device: torch.device, *, cut: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, position_ids), right-padded to the longest run length."""
    lengths = [run_length(ex, cut) for ex in batch]
    length = max(lengths)
    ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), length), dtype=torch.long)
    for row, (ex, n) in enumerate(zip(batch, lengths, strict=True)):
        ids[row, :n] = torch.from_numpy(ex.input_ids[:n])
        mask[row, :n] = 1
    positions = torch.arange(length).unsqueeze(0).expand(len(batch), -1)
    return ids.to(device), mask.to(device), positions.to(device)


def autocast_context(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPU; plain float32 on CPU (deterministic, and CPU bf16 is slow)."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class BatchOutput:
    hidden: np.ndarray
    """(layer, n_kept, feature) in the store's hidden dtype, the batch's kept tokens."""
    stats: dict[str, np.ndarray]
    """Logit statistics and top-k per kept token."""
    max_abs: np.ndarray
    """(layer,) largest |h| before the cast to the store's dtype (float16 overflows above
    65504)."""


def forward_batch(
    model: torch.nn.Module,
    batch: Sequence[TokenizedExample],
    *,
    pad_id: int,
    device: torch.device,
    stats: LogitStatistics,
    cut: bool = True,
    hidden_dtype: np.dtype | str = np.float16,
) -> BatchOutput:
    """Hidden states (in ``hidden_dtype``, the store's) and logit statistics of the batch's
    kept tokens, in batch order."""
    ids, mask, positions = pad_batch(batch, pad_id, device, cut=cut)
    rows = torch.cat(
        [torch.full((len(ex.keep),), r, dtype=torch.long) for r, ex in enumerate(batch)]
    )
    cols = torch.cat([torch.from_numpy(ex.keep) for ex in batch])
    # Targets from the uncut sequence: the last kept token's next token is not run, but it
    # is its target (-1 only at the end of the whole, possibly truncated, sequence).
    targets = torch.cat(
        [torch.from_numpy(np.append(ex.input_ids[1:], -1)[ex.keep]) for ex in batch]
    )
    rows, cols, targets = rows.to(device), cols.to(device), targets.to(device)
    with torch.inference_mode(), autocast_context(device):
        out = model.base_model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            output_hidden_states=True,
            use_cache=False,
        )
        states = [*out.hidden_states[:-1], out.last_hidden_state]
        del out
        # Gather the kept tokens layer by layer straight into the store's dtype: no float32
        # copy of all layers for a float16 store, and the range check needs no |h| temporary
        # (aminmax is one pass).
        hidden = torch.empty(
            (len(states), len(rows), states[0].shape[-1]),
            dtype=_TORCH_DTYPES[np.dtype(hidden_dtype).name],
            device=device,
        )
        max_abs = torch.empty(len(states), dtype=torch.float32, device=device)
        for layer, h in enumerate(states):
            kept = h[rows, cols]
            lo, hi = torch.aminmax(kept)
            max_abs[layer] = torch.maximum(lo.abs(), hi.abs()).float()
            hidden[layer] = kept
        del states
        token_stats = stats(kept, targets)
    return BatchOutput(hidden.cpu().numpy(), token_stats, max_abs.cpu().numpy())


_TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32}
"""Store hidden dtype -> the torch dtype the kept tokens are gathered into."""


class _Chunk:
    """Buffers of one token chunk: hidden (layer, chunk, feature) and the token variables."""

    def __init__(
        self, n_layers: int, chunk: int, n_features: int, topk: int, hidden_dtype: np.dtype
    ) -> None:
        self.hidden = np.empty((n_layers, chunk, n_features), hidden_dtype)
        self.vars: dict[str, np.ndarray] = {
            name: np.empty(chunk, spec.dtype) for name, spec in S.LOGIT_STATS.items()
        }
        self.vars[S.TOPK_IDS.name] = np.empty((chunk, topk), np.int32)
        self.vars[S.TOPK_LOGPROBS.name] = np.empty((chunk, topk), np.float16)


class ChunkBuffer:
    """Collects tokens into one chunk of every layer and writes chunk-aligned blocks.

    With ``write_behind`` the full chunk is written by a background thread while the next one
    fills (file writes release the GIL, so they overlap the forward passes): two chunk buffers
    then exist, one filling and one being written, and never more. ``close`` waits for the
    last write, so the caller's completion mark still comes after every chunk.
    """

    def __init__(
        self,
        writer: StoreWriter,
        index: int,
        *,
        n_layers: int,
        n_features: int,
        n_tokens: int,
        topk: int,
        after_write: Callable[[], None] = lambda: None,
        write_behind: bool = False,
    ) -> None:
        self.writer, self.index, self.after_write = writer, index, after_write
        self.chunk = min(writer.token_chunk, n_tokens)
        self.n_tokens = n_tokens
        self.hidden_dtype = writer.hidden_dtype
        self.limit = hidden_limit(self.hidden_dtype)
        self._shape = (n_layers, self.chunk, n_features, topk, self.hidden_dtype)
        self._filling = _Chunk(*self._shape)
        self._spare: _Chunk | None = None
        self._pool = ThreadPoolExecutor(max_workers=1) if write_behind else None
        self._pending: Future | None = None
        self.t0 = 0
        self.fill = 0

    def add(
        self, hidden: np.ndarray, stats: dict[str, np.ndarray], max_abs: np.ndarray | None = None
    ) -> None:
        """Buffer a batch; ``max_abs`` (per layer, before the cast to the store's dtype) is range-checked
        first, so no chunk holding an out-of-range value is ever written."""
        if max_abs is not None:
            self.check_range(max_abs)
        n, pos = hidden.shape[1], 0
        while pos < n:
            take = min(self.chunk - self.fill, n - pos)
            buf = self._filling
            buf.hidden[:, self.fill : self.fill + take] = hidden[:, pos : pos + take]
            for name, arr in buf.vars.items():
                arr[self.fill : self.fill + take] = stats[name][pos : pos + take]
            self.fill += take
            pos += take
            if self.fill == self.chunk:
                self.flush()

    def check_range(self, max_abs: np.ndarray) -> None:
        """Raise HiddenRangeError naming checkpoint, layer and largest |h| where the store's
        dtype overflows (float16: |h| > 65504; float32: only NaN/inf)."""
        max_abs = np.asarray(max_abs, dtype=np.float64)
        bad = ~np.isfinite(max_abs) | (max_abs > self.limit)
        if not bad.any():
            return
        layers = np.flatnonzero(bad).tolist()
        # NaN first: a NaN layer has no magnitude to report.
        nan = [layer for layer in layers if np.isnan(max_abs[layer])]
        worst = nan[0] if nan else int(layers[int(np.argmax(max_abs[layers]))])
        found = "NaN" if nan else f"max |h| {max_abs[worst]:.6g}"
        name = self.writer.names()[self.index]
        dtype = self.hidden_dtype.name
        hint = (
            "; a family whose residual stream is this large needs a store created with "
            "--hidden-dtype float32"
            if dtype == "float16" and not nan and np.isfinite(max_abs[worst])
            else ""
        )
        raise HiddenRangeError(
            f"checkpoint {name!r}: hidden states do not fit {dtype} (at most {self.limit:.6g}): "
            f"found {found} in layer {worst} (layers out of range: {layers}, tokens "
            f"{self.t0 + self.fill} onwards); refused: the checkpoint is not marked complete, so "
            f"readers do not see it{hint}"
        )

    def _write(self, buf: _Chunk, t0: int, n: int) -> _Chunk:
        self.writer.write_hidden(self.index, t0, buf.hidden[:, :n])
        self.after_write()
        self.writer.write_token_vars(self.index, t0, {k: v[:n] for k, v in buf.vars.items()})
        self.after_write()
        return buf

    def _wait(self) -> None:
        if self._pending is not None:
            self._spare = self._pending.result()  # re-raises a failed write
            self._pending = None

    def flush(self) -> None:
        if not self.fill:
            return
        if self.t0 + self.fill > self.n_tokens:
            raise ValueError(
                f"more tokens than the store holds: {self.t0 + self.fill} > {self.n_tokens}"
            )
        if self._pool is None:
            self._write(self._filling, self.t0, self.fill)
        else:
            self._wait()
            self._pending = self._pool.submit(self._write, self._filling, self.t0, self.fill)
            self._filling = self._spare or _Chunk(*self._shape)
            self._spare = None
        self.t0 += self.fill
        self.fill = 0

    def close(self) -> None:
        try:
            self.flush()
            self._wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
        if self.t0 != self.n_tokens:
            raise ValueError(f"wrote {self.t0} tokens, the store holds {self.n_tokens}")


def iterate_outputs(
    model: torch.nn.Module,
    examples: Sequence[TokenizedExample],
    *,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    stats: LogitStatistics,
    window_tokens: int = WINDOW_TOKENS,
    cut: bool = True,
    by_length: bool = True,
    hidden_dtype: np.dtype | str = np.float16,
) -> Iterator[tuple[int, BatchOutput]]:
    """(tokens, output) per window of examples, in store order (module docstring).

    ``cut=False, by_length=False`` is the plain schedule (whole sequences, consecutive batches):
    the reference the tests compare the default against."""
    offsets = np.concatenate([[0], np.cumsum([len(ex.keep) for ex in examples])])
    for span, batches in plan_windows(
        examples, batch_size, window_tokens=window_tokens, cut=cut, by_length=by_length
    ):
        base = int(offsets[span.start])
        outs, dest = [], []
        for batch in batches:
            outs.append(
                forward_batch(
                    model,
                    [examples[i] for i in batch],
                    pad_id=pad_id,
                    device=device,
                    stats=stats,
                    cut=cut,
                    hidden_dtype=hidden_dtype,
                )
            )
            # store positions (within the window) of the batch's tokens, in batch order
            dest.append(
                np.concatenate([np.arange(offsets[i], offsets[i + 1]) - base for i in batch])
            )
        yield _assemble(outs, dest, int(offsets[span.stop]) - base)


def _assemble(
    outs: Sequence[BatchOutput], dest: Sequence[np.ndarray], n: int
) -> tuple[int, BatchOutput]:
    """One window's batch outputs scattered into store order."""
    if len(outs) == 1 and np.array_equal(dest[0], np.arange(n)):
        return n, outs[0]
    first = outs[0]
    hidden = np.empty((first.hidden.shape[0], n, first.hidden.shape[2]), first.hidden.dtype)
    stats = {k: np.empty((n, *v.shape[1:]), v.dtype) for k, v in first.stats.items()}
    for out, where in zip(outs, dest, strict=True):
        hidden[:, where] = out.hidden
        for k, v in out.stats.items():
            stats[k][where] = v
    max_abs = np.max(np.stack([o.max_abs for o in outs]), axis=0)
    return n, BatchOutput(hidden, stats, max_abs)

"""What every checkpoint of one ``extract`` call shares: the run's configuration (every flag of
``repcollapse extract``), the write-protocol counter and the ``Job``. Its own module so that the
loop (run.py), the per-checkpoint writer (slot.py), the twin copy and the generated probe all
read it without importing one another."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repcollapse.extract.checkpoints import CheckpointSource
from repcollapse.extract.preflight import UsageError, weights_sha256
from repcollapse.extract.store_io import Geometry
from repcollapse.extract.tokens import TokenPlan
from repcollapse.store_schema.codecs import parse_codec
from repcollapse.store_schema.protocol import protocol_step
from repcollapse.store_schema.records import ProbeRecord
from repcollapse.store_schema.schema import HIDDEN_DTYPES
from repcollapse.store_schema.writer import StoreWriter

if TYPE_CHECKING:
    from repcollapse.extract.reserved_slots import SlotsFile


@dataclass(frozen=True)
class ExtractConfig:
    """Every flag of ``repcollapse extract``; recorded in the store's ``extraction_config``."""

    batch_size: int = field(default=8, metadata={"help": "examples per forward pass"})
    max_length: int = field(default=512, metadata={"help": "tokens per example (truncated)"})
    token_cap_per_span: int | None = field(
        default=None, metadata={"help": "keep at most N tokens per (domain, span); None: all"}
    )
    seed: int = field(default=0, metadata={"help": "splits, token sampler, generation"})
    generate: int = field(default=0, metadata={"help": "sampled completions per prompt (0: none)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    token_chunk: int = field(default=4096, metadata={"help": "tokens per store chunk"})
    hidden_dtype: str = field(
        default="float16",
        metadata={
            "help": "dtype of the stored hidden states, fixed when the store is created: float16 "
            "(|h| up to 65,504) or float32 (twice the bytes; for families such as Gemma 3 whose "
            "residual stream exceeds float16)"
        },
    )
    codec: str = field(
        default="lossless",
        metadata={
            "help": "codec of the stored hidden states, fixed when the store is created: "
            "lossless, bitround:K (K of 10 float16 mantissa bits kept, relative error <= "
            "2^-(K+1)) or int8-token (int8 plus a float32 scale per token); docs/store.md"
        },
    )
    logit_slice: int = field(default=256, metadata={"help": "tokens per float32 logit slice"})
    write_behind: bool = field(
        default=True, metadata={"help": "write each full chunk from a thread while the next fills"}
    )
    gen_temperature: float = 0.7
    gen_max_new_tokens: int = 48
    progress: bool = field(default=True, metadata={"help": "tqdm progress bar"})

    def __post_init__(self) -> None:
        minimum = {
            "batch_size": 1,
            "max_length": 1,
            "token_chunk": 1,
            "logit_slice": 1,
            "gen_max_new_tokens": 1,
            "generate": 0,
            "token_cap_per_span": 1,
        }
        for name, low in minimum.items():
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < low):
                raise UsageError(f"{_field(name)}: expected an integer >= {low}, found {value!r}")
        if self.hidden_dtype not in HIDDEN_DTYPES:
            raise UsageError(
                f"{_field('hidden_dtype')}: expected one of {list(HIDDEN_DTYPES)}, "
                f"found {self.hidden_dtype!r}"
            )
        try:
            parse_codec(self.codec, _field("codec"))
        except ValueError as e:
            raise UsageError(str(e)) from None
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UsageError(
                f"{_field('device')}: expected auto, cpu or cuda, found {self.device!r}"
            )

    def recorded(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "progress"}


_FLAGS = (
    "batch_size",
    "max_length",
    "token_cap_per_span",
    "seed",
    "generate",
    "device",
    "token_chunk",
    "hidden_dtype",
    "codec",
)


def _field(name: str) -> str:
    """The field and, where the CLI sets it, its flag: the user typed the flag."""
    flag = f" (--{name.replace('_', '-')})" if name in _FLAGS else ""
    return f"ExtractConfig.{name}{flag}"


class WriteCounter:
    """Marks each store write of extract as a step of the write protocol: repcollapse.store_schema.protocol
    counts these and its own steps (inside create, each resize of reserve, ...) as one sequence,
    and SIGKILLs the process at the n-th when ``KILL_ENV`` asks."""

    def __call__(self) -> None:
        protocol_step("extract: write")


@dataclass
class Job:
    """What every checkpoint of one ``extract`` call shares."""

    store: str | Path
    records: list[ProbeRecord]
    plan: TokenPlan
    tokenizer: Any
    geometry: Geometry
    attrs: dict[str, Any]
    config: ExtractConfig
    device: Any
    writer: StoreWriter
    counter: WriteCounter
    by_name: dict[str, CheckpointSource]
    hashes: dict[str, str] = field(default_factory=dict)
    """Weights sha256 per checkpoint name, where already computed (repcollapse.extract.preflight)."""
    slots: SlotsFile | None = None
    """``--slots-from``: every slot reserved beforehand, written without a lock
    (repcollapse.extract.reserved_slots)."""

    def weights_sha256(self, src: CheckpointSource) -> str:
        name = src.manifest.name
        if name not in self.hashes:
            self.hashes[name] = weights_sha256(src)
        return self.hashes[name]


def log(config: ExtractConfig, message: str) -> None:
    if config.progress:
        print(message, file=sys.stderr)

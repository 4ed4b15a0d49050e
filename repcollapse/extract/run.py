"""The extraction loop: checkpoints -> the activation store (``repcollapse extract``).

For each checkpoint directory (``manifest.json`` required: a directory without one is an
incomplete checkpoint and is refused before anything runs):

1. the store is created from the first checkpoint (layers, width, vocab, LoRA modules, token
   coordinates, provenance attrs) or, if it exists, checked against this run before anything
   is written (repcollapse.extract.store_io);
2. a checkpoint already complete in the store is skipped; one whose weight files are those of
   a checkpoint already complete (hard links: ``train run --reuse``) gets a copy of its data
   (repcollapse.extract.twins);
3. the unembedding is added (deduplicated by content), the slot is reserved (an incomplete
   checkpoint of the same name keeps its slot), the LoRA factors and behaviour are written, the
   probe is run batch by batch through a chunk buffer (one chunk per layer filling, one being
   written by a background thread), and ``complete`` is set LAST, after every chunk is on disk;
4. with ``--generate N``, the checkpoint's sampled completions go to their own sub-store
   (repcollapse.extract.generate).

Devices: ``auto`` picks CUDA when present (bf16 autocast for the forward; logit statistics in
float32 regardless), else CPU in float32.

Resuming: a killed run leaves the checkpoint incomplete; re-running the same command rewrites
every chunk of that slot with the same values (fixed batch composition, deterministic
algorithms on CPU) and then marks it complete, so the store equals an uninterrupted run.

Several writers without a lock (object stores): ``repcollapse store reserve`` reserves every
slot once, then each ``extract --slots-from FILE`` writes only its checkpoints' reserved slots
(repcollapse.extract.reserved_slots; ``prepare_job`` is what both run before writing).

``REPCOLLAPSE_EXTRACT_KILL_AT=n`` (tests only) SIGKILLs the process right after its n-th step
of the store's write protocol (repcollapse.store_schema.protocol: the steps inside create, add_head and
reserve, each LoRA module, behaviour, each hidden chunk, each token-variable chunk, the
completion mark), to prove resumability.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repcollapse.extract.checkpoints import (
    CheckpointSource,
    check_loadable,
    check_same_model,
    load_config,
    load_model,
    model_geometry,
    read_checkpoint,
    update_factors,
)
from repcollapse.extract.generate import generated_done, run_generated
from repcollapse.extract.job import ExtractConfig, Job, WriteCounter, log
from repcollapse.extract.preflight import (
    UsageError,
    check_reused_names,
    check_store_path,
)
from repcollapse.extract.reserved_slots import (
    SlotsFile,
    check_reserved,
    read_slots_file,
    refuse_generate,
)
from repcollapse.extract.slot import write_checkpoint
from repcollapse.extract.store_io import create_or_check, update_attr_list
from repcollapse.extract.tokens import build_plan, tokenizer_fingerprint
from repcollapse.extract.twins import copy_twin, find_twin
from repcollapse.store_schema.manifest import read_manifest
from repcollapse.store_schema.problems import Problem, SchemaError
from repcollapse.store_schema.protocol import KILL_ENV as PROTOCOL_KILL_ENV
from repcollapse.store_schema.records import (
    probe_corpus_hash,
    probe_sources,
    read_probe_jsonl,
)
from repcollapse.store_schema.writer import StoreWriter
from repcollapse.version import code_version

KILL_ENV = PROTOCOL_KILL_ENV


@dataclass
class CheckpointResult:
    name: str
    status: str
    """'extracted', 'copied' (from a twin: repcollapse.extract.twins) or 'skipped' (already complete)."""
    tokens: int = 0
    seconds: float = 0.0
    """Wall time for the checkpoint, model loading included."""
    load_seconds: float = 0.0
    """Loading the model and its LoRA factors / full-FT delta SVD."""
    probe_seconds: float = 0.0
    """The teacher-forced probe: forward, statistics and store writes."""
    probe_cpu_seconds: float = 0.0
    """CPU time of the process (all threads) during the probe: robust to a busy machine."""
    generated: str = ""


def resolve_device(name: str) -> Any:
    """The torch device; a CUDA device that this machine does not have is a usage error."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise UsageError(
                f"--device {name}: expected a CUDA device, found {count} on this machine "
                "(use --device cpu or auto)"
            )
    return device


def _tokenizer_of(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)


@contextmanager
def _deterministic() -> Any:
    import torch

    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def extract(
    store: str | Path,
    probe: str | Path,
    checkpoints: Sequence[str | Path],
    config: ExtractConfig | None = None,
    *,
    slots_from: str | Path | None = None,
) -> list[CheckpointResult]:
    """Extract every checkpoint into ``store``; returns what was done per checkpoint.

    ``slots_from``: a slots file of ``repcollapse store reserve``; each checkpoint goes to its
    reserved slot, written without a lock (repcollapse.extract.reserved_slots)."""
    config = config or ExtractConfig()
    slots = read_slots_file(slots_from) if slots_from is not None else None
    job = prepare_job(store, probe, checkpoints, config, slots=slots)
    with _deterministic():
        return [_run_checkpoint(job, src) for src in job.by_name.values()]


def prepare_job(
    store: str | Path,
    probe: str | Path,
    checkpoints: Sequence[str | Path],
    config: ExtractConfig | None = None,
    *,
    slots: SlotsFile | None = None,
) -> Job:
    """Check every input, create or check the store; the ``Job`` its checkpoints share.

    Everything is checked before anything is written (the store path, the probe, every
    checkpoint's manifest, weights and config, the device, the tokenizers, a reused name's
    weights): a bad input leaves no store, lock file or partial slot behind."""
    config = config or ExtractConfig()
    if not checkpoints:
        raise UsageError("extract: expected at least one checkpoint directory, found none")
    check_store_path(store)
    records = read_probe_jsonl(probe)
    dirs = {read_manifest(p).name: Path(p) for p in checkpoints}
    sources = [read_checkpoint(p, dirs) for p in checkpoints]
    names = [s.manifest.name for s in sources]
    if len(set(names)) != len(names):
        raise UsageError(f"extract: checkpoint names must be unique, found {names}")
    if slots is not None:
        slots.check_names(names, [s.path for s in sources])
        refuse_generate(config.generate, slots)
    for src in sources:
        check_loadable(src)
    configs = [load_config(s.model_dir) for s in sources]
    check_same_model(sources, configs)
    device = resolve_device(config.device)
    # With reserved slots, check_reserved compares each checkpoint with its reservation instead.
    hashes = check_reused_names(store, sources) if slots is None else {}
    tokenizer = _tokenizer_of(sources[0].tokenizer_dir)
    fingerprint = tokenizer_fingerprint(tokenizer)
    for src in sources[1:]:
        other = tokenizer_fingerprint(_tokenizer_of(src.tokenizer_dir))
        if other["vocab_sha256"] != fingerprint["vocab_sha256"]:
            raise SchemaError(
                [
                    Problem(
                        f"{src.path} tokenizer",
                        f"expected vocab sha256 {fingerprint['vocab_sha256']} (as {sources[0].path}), "
                        f"found {other['vocab_sha256']}",
                        "tokenizer_mismatch",
                    )
                ]
            )
    plan = build_plan(
        tokenizer,
        records,
        max_length=config.max_length,
        token_cap_per_span=config.token_cap_per_span,
        seed=config.seed,
    )
    geometry = model_geometry(configs[0])
    first = sources[0].manifest
    attrs = {
        "probe_hash": probe_corpus_hash(records),
        "probe_sources": probe_sources(records),
        "model_id": first.base_model
        or str(getattr(configs[0], "_name_or_path", ""))
        or sources[0].path.name,
        "model_family": first.model_family or str(configs[0].model_type),
        "tokenizer": fingerprint,
        "code_version": code_version(),
        "hidden_dtype": config.hidden_dtype,  # the store's (also its generated sub-stores')
        "hidden_codec": config.codec,  # likewise (repcollapse.store_schema.codecs)
        "extraction_config": {
            **config.recorded(),
            "probe_file": str(probe),
            "hidden_last_layer": "final norm output (input of the unembedding)",
            "is_sink_rule": "position 0",
            "final_logit_softcapping": getattr(configs[0], "final_logit_softcapping", None),
        },
    }
    if slots is None:
        create_or_check(
            store,
            group=None,
            geometry=geometry,
            coords=plan.coords,
            attrs=attrs,
            token_chunk=config.token_chunk,
        )
    else:  # reserved beforehand: only read (no creation, repair or consolidation)
        check_reserved(
            store, slots, sources, hashes, attrs=attrs, geometry=geometry, coords=plan.coords
        )
    job = Job(
        store=store,
        records=records,
        plan=plan,
        tokenizer=tokenizer,
        geometry=geometry,
        attrs=attrs,
        config=config,
        device=device,
        writer=StoreWriter(store),
        counter=WriteCounter(),
        by_name={s.manifest.name: s for s in sources},
        hashes=hashes,
        slots=slots,
    )
    return job


def _run_checkpoint(job: Job, src: CheckpointSource) -> CheckpointResult:
    config, name = job.config, src.manifest.name
    reserved = job.slots.entry(name) if job.slots is not None else None
    probe_done = job.writer.status(name) == "complete"
    gen_done = not config.generate or generated_done(job.store, name)
    if probe_done and gen_done:
        log(config, f"{name}: complete in the store, skipped")
        return CheckpointResult(name, "skipped")
    t0 = time.perf_counter()
    # A reserved slot is extracted, never copied: a copy reserves a slot under the lock.
    twin = None if reserved or probe_done or not gen_done else find_twin(job, src)
    if twin is not None:
        tokens = copy_twin(job, src, twin)
        seconds = time.perf_counter() - t0
        update_attr_list(
            job.store,
            None,
            "extraction_log",
            {
                "checkpoint": name,
                "copied_from": twin.manifest.name,
                "seconds": round(seconds, 3),
                "weights_sha256": job.weights_sha256(src),
            },
        )
        log(config, f"{name}: same weight files as {twin.manifest.name}, its data copied")
        return CheckpointResult(name, "copied", tokens, seconds=seconds)
    model = load_model(src, job.device)
    lora = update_factors(model, src, job.by_name)
    t_load, cpu_load = time.perf_counter(), time.process_time()
    tokens = 0
    if not probe_done:
        tokens = write_checkpoint(job, job.writer, model, src, job.plan, lora, reserved)
    t_probe, cpu_probe = time.perf_counter(), time.process_time()
    if not probe_done and reserved is None:  # a shared attribute: the coordinator logged it
        update_attr_list(
            job.store,
            None,
            "extraction_log",
            {
                "checkpoint": name,
                "device": str(job.device),
                "batch_size": config.batch_size,
                "seconds": round(time.perf_counter() - t0, 3),
                "tokens": tokens,
                "weights_sha256": job.weights_sha256(src),
            },
        )
    generated = run_generated(job, src, model, lora) if config.generate and not gen_done else ""
    return CheckpointResult(
        name,
        "extracted",
        tokens,
        seconds=time.perf_counter() - t0,
        load_seconds=t_load - t0,
        probe_seconds=t_probe - t_load,
        probe_cpu_seconds=cpu_probe - cpu_load,
        generated=generated,
    )

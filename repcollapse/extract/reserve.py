"""The coordinator of several lock-free writers: ``repcollapse store reserve``.

Runs extract's checks, creates the store or checks (and repairs) it, and reserves a slot and an
unembedding head for every checkpoint, in the order given: what a sequential ``extract`` would
reserve, at the same indices. Workers then fill their slots with ``extract --slots-from``
(repcollapse.extract.reserved_slots; docs/store.md, "Several writers on an object store").
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from repcollapse.extract.checkpoints import CheckpointSource, checkpoint_coords, load_model
from repcollapse.extract.job import ExtractConfig, log
from repcollapse.extract.reserved_slots import ReservedSlot, SlotsFile
from repcollapse.extract.run import prepare_job
from repcollapse.extract.store_io import update_attr_list
from repcollapse.store_schema.problems import UsageError
from repcollapse.store_schema.store import read_attrs


def _manifest_sha256(src: CheckpointSource) -> str:
    return hashlib.sha256(src.manifest_json.encode()).hexdigest()


def reserve_slots(
    store: str | Path,
    probe: str | Path,
    checkpoints: Sequence[str | Path],
    config: ExtractConfig,
) -> SlotsFile:
    """Create or check the store and reserve a slot (and a head) for every checkpoint, in order.

    The only writer of shared metadata: run it alone, before the workers. Run twice with the
    same checkpoints it reserves nothing new (a reserved name keeps its slot)."""
    if config.generate:
        raise UsageError(
            "store reserve: --generate: expected 0 (the generated sub-store is not reserved; "
            f"extract it without --slots-from), found {config.generate}"
        )
    job = prepare_job(store, probe, checkpoints, config)
    writer, slots = job.writer, []
    for src in job.by_name.values():
        name = src.manifest.name
        weights = job.weights_sha256(src)
        complete = writer.status(name) == "complete"
        if complete:
            index = writer.names().index(name)
            head = int(writer.g["head"][index])
        else:
            t0 = time.perf_counter()
            model = load_model(src, job.device)
            weight = model.get_output_embeddings().weight.detach().float().cpu().numpy()
            del model
            head = writer.add_head(weight)
            # LoRA rank and scaling are the worker's to write (a full stage's need an SVD).
            index = writer.reserve(checkpoint_coords(src, None, head))
            update_attr_list(
                store,
                None,
                "extraction_log",
                {"checkpoint": name, "reserved_slot": index, "weights_sha256": weights},
            )
            log(config, f"{name}: slot {index}, head {head} ({time.perf_counter() - t0:.1f} s)")
        hashes = list(read_attrs(store).get("head_hashes", []))
        slots.append(
            ReservedSlot(
                checkpoint=name,
                slot=index,
                head=head,
                head_sha256=hashes[head],
                weights_sha256=weights,
                manifest_sha256=_manifest_sha256(src),
                path=str(src.path.resolve()),
                complete=complete,
            )
        )
    attrs = read_attrs(store)
    return SlotsFile(
        store=str(store),
        store_id=str(attrs["store_id"]),
        probe_hash=str(attrs["probe_hash"]),
        reserved_at=datetime.now(UTC).isoformat(timespec="seconds"),
        slots=tuple(slots),
    )

"""``repcollapse data build``: write the probe corpus, pools, preference pairs, future tasks
and MANIFEST.json into one directory (layout in docs/INTERFACES.md).

Generation order is fixed (probe, then per-domain eval before train, then preference, then
future tasks) and every prompt is globally unique, so the eval sets never leak into train
and no pool shares a prompt with the probe. Eval splits are generated before train splits
so that changing a train size leaves the eval sets unchanged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from repcollapse.store_schema.records import domain_order, probe_corpus_hash, read_probe_jsonl
from repcollapse.train.data import future_tasks, preference_tasks
from repcollapse.train.data.common import GENERATOR_SOURCE, Example
from repcollapse.train.data.config import POOL_DOMAINS, DataConfig
from repcollapse.train.data.probe import (
    GENERATORS,
    PROBE_GENERATORS,
    IndexedGenerator,
    build_probe,
    stream_rng,
    unique_examples,
)
from repcollapse.train.data.real import compose
from repcollapse.train.data.real.supply import Supplies, load_supplies

SPLITS = ("eval", "train")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True)


def _provenance(ex: Example) -> dict[str, str]:
    """source/license (and response_source) fields; none for a synthetic build, whose files
    stay as they were before real data existed."""
    if not ex.source:
        return {}
    out = {"source": ex.source, "license": ex.license}
    if ex.response_source:
        out["response_source"] = ex.response_source
    return out


def sft_record(rid: str, domain: str, ex: Example) -> dict[str, Any]:
    return {
        "id": rid,
        "domain": domain,
        "prompt": ex.prompt,
        "response": ex.response,
        "meta": ex.meta,
        **_provenance(ex),
    }


def preference_record(rid: str, ex: Example) -> dict[str, Any]:
    meta = {k: v for k, v in ex.meta.items() if k != "rejected"}
    return {
        "id": rid,
        "domain": "preference",
        "prompt": ex.prompt,
        "chosen": ex.response,
        "rejected": ex.meta["rejected"],
        "meta": meta,
        **_provenance(ex),
    }


def _generators(
    cfg: DataConfig, supplies: Supplies | None
) -> tuple[dict[str, IndexedGenerator], dict[str, IndexedGenerator], IndexedGenerator]:
    """(probe generators, pool generators, preference generator) for ``cfg.source``."""
    plain_pref: IndexedGenerator = lambda r, _i: preference_tasks.generate(r)  # noqa: E731
    if supplies is None:
        return PROBE_GENERATORS, GENERATORS, plain_pref
    probe = {
        d: compose.domain_generator(d, g, supplies, cfg.source, compose.PROBE_MAX_CHARS)
        for d, g in PROBE_GENERATORS.items()
    }
    pools = {d: compose.domain_generator(d, g, supplies, cfg.source) for d, g in GENERATORS.items()}
    return probe, pools, compose.preference_generator(supplies, cfg.source)


def load_real(cfg: DataConfig) -> Supplies | None:
    """The real records of a real/mixed build (None for synthetic), shuffled by the seed."""
    if cfg.source == "synthetic":
        return None
    return load_supplies(lambda domain: stream_rng(cfg.seed, "real", domain))


def generate_files(
    cfg: DataConfig, supplies: Supplies | None = None
) -> tuple[dict[str, list[str]], str]:
    """Every output file as relative path -> JSON lines (no manifest), and the probe hash.

    ``supplies``: the real records (``load_real``); None builds from the generators only."""
    seen: dict[str, str] = {}
    files: dict[str, list[str]] = {}
    probe_gens, pool_gens, pref_gen = _generators(cfg, supplies)
    extra = read_probe_jsonl(cfg.probe_extra) if cfg.probe_extra else ()
    probe = build_probe(cfg.seed, cfg.probe_per_domain, seen, probe_gens, extra)
    files["probe.jsonl"] = [r.to_json() for r in probe]
    sizes = {"eval": cfg.pool_eval, "train": cfg.pool_train}
    for domain in POOL_DOMAINS:
        for split in SPLITS:
            where = f"pools/{domain}.{split}.jsonl"
            rng = stream_rng(cfg.seed, "pool", domain, split)
            exs = unique_examples(pool_gens[domain], rng, sizes[split], seen, where)
            files[where] = [
                _dumps(sft_record(f"{domain}-{split}-{i:05d}", domain, ex))
                for i, ex in enumerate(exs)
            ]
    psizes = {"eval": cfg.preference_eval, "train": cfg.preference_train}
    for split in SPLITS:
        where = f"pools/preference.{split}.jsonl"
        rng = stream_rng(cfg.seed, "preference", split)
        exs = unique_examples(pref_gen, rng, psizes[split], seen, where)
        files[where] = [
            _dumps(preference_record(f"preference-{split}-{i:05d}", ex)) for i, ex in enumerate(exs)
        ]
    fsizes = {"eval": cfg.future_eval, "train": cfg.future_train}
    for task in future_tasks.FUTURE_TASKS:
        gen = future_tasks.GENERATORS[task]
        for split in SPLITS:
            where = f"future/{task}.{split}.jsonl"
            rng = stream_rng(cfg.seed, "future", task, split)
            exs = unique_examples(lambda r, _i, g=gen: g(r), rng, fsizes[split], seen, where)
            files[where] = [
                _dumps(sft_record(f"{task}-{split}-{i:05d}", task, ex)) for i, ex in enumerate(exs)
            ]
    return files, probe_corpus_hash(probe)


def _source_counts(files: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """file -> {"<source> | <license>": records}: what the corpus was built from."""
    out: dict[str, dict[str, int]] = {}
    for rel, lines in files.items():
        counts: dict[str, int] = {}
        for line in lines:
            rec = json.loads(line)
            key = f"{rec.get('source', GENERATOR_SOURCE)} | {rec.get('license', 'Apache-2.0')}"
            counts[key] = counts.get(key, 0) + 1
        out[rel] = dict(sorted(counts.items()))
    return out


def _probe_domains(lines: list[str]) -> tuple[str, ...]:
    """The domains the probe holds, in store order (the six paper domains, then the user's)."""
    present = {json.loads(line)["domain"] for line in lines}
    return tuple(d for d in domain_order(present) if d in present)


def build_data(out_dir: str | Path, cfg: DataConfig | None = None) -> dict[str, Any]:
    """Write every file under ``out_dir`` and return the manifest (also written, last)."""
    cfg = cfg or DataConfig()
    out = Path(out_dir)
    supplies = load_real(cfg)
    files, probe_hash = generate_files(cfg, supplies)
    counts: dict[str, int] = {}
    digests: dict[str, str] = {}
    for rel, lines in files.items():
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        counts[rel] = len(lines)
        digests[rel] = hashlib.sha256(data).hexdigest()
    manifest = {
        "generator": GENERATOR_SOURCE,
        "seed": cfg.seed,
        "config": asdict(cfg),
        "probe_domains": list(_probe_domains(files["probe.jsonl"])),
        "pool_domains": list(POOL_DOMAINS),
        "future_tasks": list(future_tasks.FUTURE_TASKS),
        "counts": counts,
        "sha256": digests,
        "probe_hash": probe_hash,
        "source": cfg.source,
        "sources": _source_counts(files),
        "missing_sources": dict(supplies.missing) if supplies else {},
    }
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    # Written last (via rename) so that a directory with a MANIFEST.json is complete.
    tmp = out / ".MANIFEST.json.tmp"
    tmp.write_bytes(text.encode("utf-8"))
    tmp.replace(out / "MANIFEST.json")
    return manifest

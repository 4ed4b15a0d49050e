"""``describe_store``: a human summary of a store."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np

from repcollapse.store_schema import codecs as C
from repcollapse.store_schema.store import (
    _is_local,
    _local_path,
    _open_group,
    as_str_array,
    complete_mask,
)


def _size_on_disk(url: str | Path) -> str:
    if not _is_local(url):
        return "n/a (remote store)"
    total = sum(p.stat().st_size for p in _local_path(url).rglob("*") if p.is_file())
    return f"{total / 2**20:.1f} MiB"


def describe_store(url: str | Path, group: str | None = None) -> str:
    g = _open_group(url, group, "r")
    attrs = g.attrs
    codec = C.codec_of(dict(attrs), str(url))
    hidden = g["hidden"]
    n_ckpt, n_layer, n_tok, n_feat = hidden.shape
    complete = complete_mask(url, group)
    names = [str(x) for x in g["name"][:]]
    lines = [
        f"store {url}{'/' + group if group else ''}",
        f"  schema v{attrs.get('schema_version')}  id {attrs.get('store_id')}",
        f"  model {attrs.get('model_id')} ({attrs.get('model_family')}), tokenizer {attrs.get('tokenizer')}",
        f"  probe hash {str(attrs.get('probe_hash'))[:16]}..., code {attrs.get('code_version')}",
    ]
    sources = attrs.get("probe_sources") or []
    lines.append(f"  probe sources: {len(sources) or 'not recorded'}")
    lines += [
        f"    {r['domain']}: {r['source']} [{r['license']}] x {r['n_records']}" for r in sources
    ]
    lines.append(f"  checkpoints: {n_ckpt} ({int(complete.sum())} complete)")
    kinds = as_str_array(g["stage_kind"][:])
    seqs = as_str_array(g["sequence"][:])
    for i, name in enumerate(names):
        state = "complete" if complete[i] else "INCOMPLETE"
        lines.append(f"    [{i}] {name}  ({seqs[i] or '-'} / {kinds[i]})  {state}")
    lines.append(
        f"  layers: {n_layer}  features: {n_feat}  tokens: {n_tok}  hidden dtype: "
        f"{C.logical_dtype(g, codec)}  codec: {codec.name}"
    )
    domains = as_str_array(g["domain"][:])
    spans = as_str_array(g["span"][:])
    sinks = np.asarray(g["is_sink"][:]).astype(bool)
    lines.append(
        f"  attention-sink tokens flagged: {int(sinks.sum())} (excluded from analysis by default)"
    )
    counts = collections.Counter(zip(domains, spans, strict=True))
    span_names = sorted({s for _, s in counts})
    lines.append("  tokens per domain x span:")
    lines.append(
        "    " + f"{'domain':<10}" + "".join(f"{s:>15}" for s in span_names) + f"{'total':>9}"
    )
    for d in dict.fromkeys(domains):
        row = [counts.get((d, s), 0) for s in span_names]
        lines.append("    " + f"{d:<10}" + "".join(f"{n:>15}" for n in row) + f"{sum(row):>9}")
    lines.append(f"  size on disk: {_size_on_disk(url)}")
    return "\n".join(lines)

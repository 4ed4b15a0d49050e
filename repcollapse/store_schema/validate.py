"""``validate_store``: every problem of a store, each naming what was expected and found.

Opens the store read-only: validation never modifies a store. Besides the layout, every
complete checkpoint's data is checked against the sha256 per (variable, chunk) recorded at write
time (``repcollapse.store_schema.checksums``); ``scan_values=False`` reads no chunk (presence only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

from repcollapse.store_schema import codecs as C
from repcollapse.store_schema import labels as L
from repcollapse.store_schema import schema as S
from repcollapse.store_schema.checksums import as_problems, verify_heads, verify_slot
from repcollapse.store_schema.problems import Problem
from repcollapse.store_schema.protocol import committed_slots, orphan_problems
from repcollapse.store_schema.store import _open_group, check_schema_version


def _dims(arr: zarr.Array) -> tuple[str, ...]:
    return tuple(arr.metadata.dimension_names or ())


def _dtype_name(arr: zarr.Array) -> str:
    dt = arr.dtype
    if dt.kind in ("T", "U", "O"):
        return "str"
    return np.dtype(dt).name


_LAYOUT_KINDS = {"missing_variable", "wrong_dims", "wrong_dtype", "wrong_length"}


def _check_variable(
    g: zarr.Group, spec: S.VariableSpec, sizes: dict[str, int], problems: list[Problem]
) -> zarr.Array | None:
    if spec.name not in g:
        problems.append(
            Problem(
                spec.name,
                f"expected variable with dims {spec.dims} and dtype {spec.dtype}, found none",
                "missing_variable",
            )
        )
        return None
    arr = g[spec.name]
    dims = _dims(arr)
    if dims != spec.dims:
        problems.append(
            Problem(spec.name, f"expected dims {spec.dims}, found {dims}", "wrong_dims")
        )
        return arr
    if _dtype_name(arr) != spec.dtype:
        problems.append(
            Problem(
                spec.name, f"expected dtype {spec.dtype}, found {_dtype_name(arr)}", "wrong_dtype"
            )
        )
    for dim, n in zip(dims, arr.shape, strict=True):
        if dim in sizes and sizes[dim] != n:
            problems.append(
                Problem(
                    spec.name, f"expected {dim} of length {sizes[dim]}, found {n}", "wrong_length"
                )
            )
        sizes.setdefault(dim, n)
    if "description" not in arr.attrs:
        problems.append(
            Problem(
                spec.name, "expected a 'description' attribute, found none", "missing_description"
            )
        )
    return arr


def validate_group(
    g: zarr.Group,
    where: str,
    *,
    scan_values: bool = True,
    warnings: list[Problem] | None = None,
) -> tuple[list[Problem], dict[str, Any]]:
    """Problems of one store group; ``warnings`` (if given) collects what is not a problem."""
    problems: list[Problem] = []
    attrs = dict(g.attrs)
    problems += check_schema_version(attrs, where)
    if problems and problems[0].kind == "newer_schema":
        return problems, {}  # a newer layout cannot be judged by this code's rules
    for key in S.REQUIRED_ATTRS:
        if key not in attrs:
            problems.append(
                Problem(f"attrs.{key}", "expected a root attribute, found none", "missing_attr")
            )
    recorded = S.hidden_dtype_of(attrs)
    if recorded not in S.HIDDEN_DTYPES:
        problems.append(
            Problem(
                f"attrs.{S.HIDDEN_DTYPE_ATTR}",
                f"expected one of {list(S.HIDDEN_DTYPES)}, found {recorded!r}",
                "wrong_dtype",
            )
        )
        recorded = S.DEFAULT_HIDDEN_DTYPE
    # hidden is checked against the dtype the store records (float16 where none is recorded),
    # as its codec stores it (int8-token: int8, and the scales beside it)
    problems += C.codec_problems(g)
    try:
        codec = C.codec_of(attrs, where)
    except ValueError:
        codec = C.parse_codec(C.DEFAULT_CODEC)  # reported above
    required = {**S.REQUIRED_VARIABLES, S.HIDDEN.name: codec.hidden_spec(recorded)}
    if codec.quantised:
        required[C.SCALE.name] = C.SCALE
    sizes: dict[str, int] = {}
    if "hidden" in g:  # token and checkpoint lengths are defined by hidden
        dims = _dims(g["hidden"])
        if dims == S.HIDDEN.dims:
            sizes = dict(zip(dims, g["hidden"].shape, strict=True))
    for spec in [
        *S.TOKEN_COORDS.values(),
        *S.CHECKPOINT_COORDS.values(),
        *required.values(),
    ]:
        if spec.name == "unembedding":
            sizes_u = {S.FEATURE: sizes[S.FEATURE]} if S.FEATURE in sizes else {}
            _check_variable(g, spec, sizes_u, problems)
        else:
            _check_variable(g, spec, sizes, problems)
    for module in attrs.get("lora_modules", {}) or {}:
        for spec in S.lora_variable_specs(module):
            _check_variable(g, spec, sizes, problems)
    # The labels' UTF-8 forms (store_schema.labels): optional, all or none; absent in stores
    # written before them (a warning).
    if L.forms_in(g):
        for label in L.LABELS:
            _check_variable(g, L.form_spec(label), sizes, problems)
    elif warnings is not None:
        warnings += L.missing_forms_warning(g, where)
    summary: dict[str, Any] = {"checkpoints": 0, "complete": 0}
    if "complete" in g and "name" in g:
        # A killed reservation's tail is one problem with its repair, not a nameless checkpoint.
        problems += orphan_problems(g)
        n = committed_slots(g)
        complete = np.asarray(g["complete"][:n]).astype(bool)
        names = [str(x) for x in g["name"][:n]]
        summary = {"checkpoints": len(names), "complete": int(complete.sum()), "sizes": sizes}
        for i, name in enumerate(names):
            if i < len(complete) and not complete[i]:
                problems.append(
                    Problem(
                        f"checkpoint {name!r}",
                        "expected complete = 1, found 0: extraction was interrupted or is running; re-run extract to finish it",
                        "incomplete_checkpoint",
                    )
                )
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            problems.append(
                Problem(
                    "name",
                    f"expected unique checkpoint names, found duplicates {dup}",
                    "duplicate_checkpoint",
                )
            )
        if scan_values and "hidden" in g and _dims(g["hidden"]) == S.HIDDEN.dims:
            problems += _scan_hidden(g["hidden"], names, complete, codec.keepbits)
        if scan_values and codec.quantised and C.SCALE.name in g:
            problems += _scan_hidden(g[C.SCALE.name], names, complete)
        if not any(p.kind in _LAYOUT_KINDS for p in problems):  # on a well-formed layout only
            problems += L.agreement_problems(g, n, names)
            problems += _check_sums(g, names, complete, scan_values, warnings)
    return problems, summary


def _check_sums(
    g: zarr.Group,
    names: list[str],
    complete: np.ndarray,
    scan_values: bool,
    warnings: list[Problem] | None,
) -> list[Problem]:
    """Every complete checkpoint against its checksums, and the unembedding heads they use."""
    problems: list[Problem] = []
    unrecorded = []
    for i, name in enumerate(names):
        if i >= len(complete) or not complete[i]:
            continue
        found, recorded = verify_slot(g, i, name, values=scan_values)
        problems += found
        if not recorded:
            unrecorded.append(name)
    if warnings is not None:
        warnings += as_problems(unrecorded)
    if scan_values and "head" in g:
        heads = np.asarray(g["head"][:])
        problems += verify_heads(g, [int(heads[i]) for i in np.flatnonzero(complete)])
    return problems


def _scan_hidden(
    hidden: zarr.Array, names: list[str], complete: np.ndarray, keepbits: int | None = None
) -> list[Problem]:
    """NaN/inf in stored hidden states, one (checkpoint, layer) chunk row at a time; in a
    bitround:K store (``keepbits``) also values with a dropped mantissa bit set."""
    problems = []
    n_ckpt, n_layer = hidden.shape[:2]
    for c in range(min(n_ckpt, len(complete))):
        if not complete[c]:
            continue
        for layer in range(n_layer):
            block = np.asarray(hidden[c, layer])
            bad = ~np.isfinite(block)
            if bad.any():
                tok = int(np.argwhere(bad.reshape(len(bad), -1))[0][0])
                var = hidden.path.rsplit("/", 1)[-1]
                problems.append(
                    Problem(
                        f"{var}[checkpoint={names[c]!r}, layer={layer}]",
                        f"expected finite values, found {int(bad.sum())} NaN/inf (first at token {tok})",
                        "non_finite",
                    )
                )
            unrounded = C.dropped_bits_set(block, keepbits) if keepbits else 0
            if unrounded:
                problems.append(
                    Problem(
                        f"hidden[checkpoint={names[c]!r}, layer={layer}]",
                        f"expected at most {keepbits} mantissa bits (codec bitround:{keepbits}), "
                        f"found {unrounded} value(s) with more",
                        "codec_mismatch",
                    )
                )
    return problems


def validate_store(
    url: str | Path, *, scan_values: bool = True, warnings: list[Problem] | None = None
) -> tuple[list[Problem], str]:
    """All problems of the store at ``url`` (and its generated-probe group) plus a summary line.

    ``warnings``, if given, receives what does not make a store invalid (checkpoints written
    before checksums existed)."""
    try:
        g = _open_group(url, None, "r")
    except Exception as e:  # noqa: BLE001 - any failure to open is itself the problem
        return [
            Problem(
                str(url),
                f"expected a Zarr v3 group, found none or unreadable ({type(e).__name__}: {e})",
                "not_a_store",
            )
        ], ""
    problems, summary = validate_group(g, str(url), scan_values=scan_values, warnings=warnings)
    if S.GENERATED_GROUP in g:
        gen = g[S.GENERATED_GROUP]
        # Either one store in `generated` itself, or one per checkpoint in its sub-groups
        # (extract --generate: generated tokens differ per checkpoint), listed in an attr.
        listed = dict(gen.attrs.get(S.GENERATED_INDEX_ATTR, {}))
        subs = sorted(gen.group_keys()) if "hidden" not in gen else []
        targets = [(f"{S.GENERATED_GROUP}/{k}", gen[k]) for k in subs] or [(S.GENERATED_GROUP, gen)]
        for where, sub in targets:
            sub_warnings: list[Problem] = []
            gp, _ = validate_group(
                sub, f"{url}/{where}", scan_values=scan_values, warnings=sub_warnings
            )
            problems += [Problem(f"{where}/{p.location}", p.message, p.kind) for p in gp]
            if warnings is not None:
                warnings += [
                    Problem(f"{where}/{p.location}", p.message, p.kind) for p in sub_warnings
                ]
        for name, path in listed.items():
            if path.split("/", 1)[-1] not in subs:
                problems.append(
                    Problem(
                        f"{S.GENERATED_GROUP} attrs.{S.GENERATED_INDEX_ATTR}",
                        f"expected sub-group {path!r} of checkpoint {name!r}, found none",
                        "missing_group",
                    )
                )
    sizes = summary.get("sizes", {})
    line = (
        f"schema v{g.attrs.get('schema_version')}, {summary.get('complete', 0)} complete checkpoint(s), "
        f"{sizes.get(S.LAYER, '?')} layers, {sizes.get(S.TOKEN, '?')} tokens, {sizes.get(S.FEATURE, '?')} features"
    )
    return problems, line

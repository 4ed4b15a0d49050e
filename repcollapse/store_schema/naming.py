"""Checkpoint names: typeable, unique, made from a checkpoint's coordinates.

A checkpoint's name is the key of the ``checkpoint`` dimension of a store and of the
``checkpoint`` column of the tables, so it is typed into ``ds.sel(checkpoint=...)``, into SQL
``WHERE`` clauses and into shell arguments. It uses only ``[A-Za-z0-9._-]``:

    base                                    the base model (stage 0)
    A.s0.01-general                         sequence A, seed 0, stage 1 named 'general'
    A.replay_general_0.10.s0.02-math        ... trained with the mitigation replay:general:0.10
    A.noop.s1.03-code                       ... the lr-0 control (mitigation 'noop'), seed 1
    A.full.s0.01-general                    a full fine-tuning stage (stage_kind 'full')

The middle field, the chain's variant, is the mitigation label's slug (':' and '+' as '_',
'none' left out) with '_full' after it for a full fine-tuning stage: sequence A trained with
LoRA and with full fine-tuning share sequence, mitigation ('none'), seed and stage names, and
one store holds both (the paper study), so without it their names would clash.

Fields are joined by '.', which neither a sequence nor a stage name may contain; the
mitigation's slug (its label with ':' and '+' as '_') may, so a name is read from both ends
(``parse_checkpoint_name``). The sequence, mitigation, seed and stage stay coordinates of their
own: nothing should parse a name to learn them.

Stores and tables written before these names carry the legacy form
``A[replay:general:0.10]@s0/02-math`` (``legacy_checkpoint_name``). They are never rewritten:
``typeable_names`` gives every stored legacy name its typeable form (the notebook API and the
SQL views index by it and keep the stored one as ``checkpoint_label``); a name given by hand
stays as it is.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

BASE_NAME = "base"
"""The name of stage 0 of every store."""
NO_MITIGATION = "none"
FULL = "full"
"""The stage kind that shows in a name (as the variant's last part)."""
TYPEABLE = re.compile(r"[A-Za-z0-9._-]+")
"""What every checkpoint name made here fully matches."""
_SEQUENCE = re.compile(r"[A-Za-z0-9_-]+")
_STAGE = re.compile(r"[A-Za-z0-9_]+")
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")
_NEW = re.compile(
    r"(?P<sequence>[A-Za-z0-9_-]+)(?:\.(?P<mitigation>[A-Za-z0-9._-]+))?"
    r"\.s(?P<seed>\d+)\.(?P<index>\d{2,})-(?P<stage>[A-Za-z0-9_]+)"
)
_LEGACY = re.compile(
    r"(?P<sequence>[A-Za-z0-9_-]+)(?:\[(?P<mitigation>[^\[\]]+)\])?"
    r"@s(?P<seed>\d+)/(?P<index>\d{2,})-(?P<stage>[A-Za-z0-9_]+)"
)


@dataclass(frozen=True)
class CheckpointId:
    """The coordinates a checkpoint name is made from (``mitigation`` as its slug; of the
    stage kind only whether it is 'full')."""

    sequence: str
    mitigation: str
    """``mitigation_slug`` of the mitigation label ('none' without one)."""
    seed: int | None
    """None for the base (its name carries no seed)."""
    stage_index: int
    stage: str
    """The stage's name in its run config ('base' for stage 0)."""
    full: bool = False
    """A full fine-tuning stage (stage_kind 'full')."""


def is_typeable(name: str) -> bool:
    """True when ``name`` is non-empty and uses only ``[A-Za-z0-9._-]``."""
    return bool(TYPEABLE.fullmatch(name))


def mitigation_slug(label: str) -> str:
    """A mitigation label as it appears in a name: 'none' for none, else ':' and '+' (and any
    other character outside ``[A-Za-z0-9.-]``) as '_'."""
    if label in ("", NO_MITIGATION):
        return NO_MITIGATION
    return _SLUG_UNSAFE.sub("_", label)


def _check(value: object, pattern: re.Pattern[str], field: str, expected: str) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"checkpoint name: {field}: expected {expected}, found {value!r}")


def _fields(sequence: str, seed: int, stage_index: int, stage: str) -> tuple[str, int, int, str]:
    _check(sequence, _SEQUENCE, "sequence", "ASCII letters, digits, '-' and '_'")
    _check(stage, _STAGE, "stage", "ASCII letters, digits and '_'")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"checkpoint name: seed: expected an integer >= 0, found {seed!r}")
    if isinstance(stage_index, bool) or not isinstance(stage_index, int) or stage_index < 1:
        raise ValueError(
            f"checkpoint name: stage_index: expected an integer >= 1, found {stage_index!r}"
        )
    return sequence, seed, stage_index, stage


def checkpoint_name(
    sequence: str,
    mitigation: str,
    seed: int,
    stage_index: int,
    stage: str,
    stage_kind: str = "",
) -> str:
    """The typeable name of a stage's checkpoint ('base' for stage 0).

    ``mitigation`` is the chain's mitigation label ('none' or '' without one), ``stage`` the
    stage's name in the run config (its directory is ``NN-<stage>``), ``stage_kind`` its kind
    (only 'full' shows). ValueError naming the field when one cannot make a typeable name.
    """
    if stage_index == 0:
        return BASE_NAME
    sequence, seed, stage_index, stage = _fields(sequence, seed, stage_index, stage)
    slug = mitigation_slug(mitigation)
    parts = ([] if slug == NO_MITIGATION else [slug]) + ([FULL] if stage_kind == FULL else [])
    middle = f".{'_'.join(parts)}" if parts else ""
    return f"{sequence}{middle}.s{seed}.{stage_index:02d}-{stage}"


def legacy_checkpoint_name(
    sequence: str, mitigation: str, seed: int, stage_index: int, stage: str
) -> str:
    """The name training gave a checkpoint before typeable names (brackets, '@', '/'); kept to
    read and test stores written then."""
    if stage_index == 0:
        return BASE_NAME
    sequence, seed, stage_index, stage = _fields(sequence, seed, stage_index, stage)
    label = "" if mitigation in ("", NO_MITIGATION) else f"[{mitigation}]"
    return f"{sequence}{label}@s{seed}/{stage_index:02d}-{stage}"


def parse_checkpoint_name(name: str) -> CheckpointId:
    """The coordinates in a typeable name (the inverse of ``checkpoint_name``, the mitigation
    as its slug). For checks and tests: code that needs a checkpoint's sequence, seed or stage
    reads its coordinates."""
    if name == BASE_NAME:
        return CheckpointId("", NO_MITIGATION, None, 0, BASE_NAME)
    m = _NEW.fullmatch(name)
    if not m:
        raise ValueError(
            f"checkpoint name: expected 'base' or <sequence>[.<mitigation>].s<seed>.<NN>-<stage>"
            f" (e.g. 'A.s0.01-general'), found {name!r}"
        )
    variant = m["mitigation"] or ""
    full = variant == FULL or variant.endswith(f"_{FULL}")
    if full:
        variant = variant.removesuffix(FULL).removesuffix("_")
    return CheckpointId(
        m["sequence"],
        variant or NO_MITIGATION,
        int(m["seed"]),
        int(m["index"]),
        m["stage"],
        full,
    )


def typeable_name(name: str) -> str:
    """The current form of one stored name: a name in the legacy form ``A[mit]@s0/01-stage``
    as ``checkpoint_name`` makes it (a legacy name does not say whether its stage was a full
    fine-tuning one: none gets '.full'); any other name as it is (typeable ones, and names a
    person gave a checkpoint's manifest by hand, which are theirs to choose)."""
    m = _LEGACY.fullmatch(name)
    if not m:
        return name
    return checkpoint_name(
        m["sequence"], m["mitigation"] or "", int(m["seed"]), int(m["index"]), m["stage"]
    )


def typeable_names(names: Iterable[str]) -> list[str]:
    """``typeable_name`` of each of ``names`` (unique stored names), kept one-to-one: where two
    would get the same name (a store holding a legacy name and its current form), both keep
    their stored one (a name that is not legacy is its own form, and a legacy one is never
    typeable, so a kept legacy name cannot equal another's form)."""
    names = [str(n) for n in names]
    forms = [typeable_name(n) for n in names]
    # count each form once per distinct stored name (a name may repeat, e.g. as a parent)
    taken = Counter(form for _, form in dict(zip(names, forms, strict=True)).items())
    return [f if taken[f] == 1 else n for n, f in zip(names, forms, strict=True)]


def typeable_mapping(names: Iterable[str]) -> dict[str, str]:
    """{stored name: typeable form} over the distinct ``names`` (``typeable_names``)."""
    distinct = list(dict.fromkeys(str(n) for n in names))
    return dict(zip(distinct, typeable_names(distinct), strict=True))


def stored_names(given: Iterable[str], stored: Iterable[str]) -> list[str]:
    """Each of ``given`` as the stored name it means: itself when a name of ``stored``, else the
    stored name whose current form it is (``typeable_names``), so ``--checkpoints A.s0.01-math``
    selects ``A@s0/01-math`` in an older store; a name of neither stays as it is (the caller
    reports it with the names it knows)."""
    stored = [str(n) for n in stored]
    known = set(stored)
    by_form = dict(zip(typeable_names(stored), stored, strict=True))
    return [g if g in known else by_form.get(g, g) for g in (str(x) for x in given)]

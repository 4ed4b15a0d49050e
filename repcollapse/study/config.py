"""STUDY.toml: the experimental matrix as a frozen dataclass, validated on load.

Every error is one line naming the field, what was expected and what was found, raised before
anything is trained. The format (docs/study.md):

    name = "cpu-small"
    budget = "demo"                       # one budget per study
    seeds = [0, 1, 2]
    families = ["smollm2-135m-instruct", "gemma3-270m"]   # embedded names or HF directories
    sequences = ["A", "control", "D"]     # shipped configs (repcollapse train configs) or .toml paths
    mitigations = ["replay10"]            # config <sequence>_<mitigation>, for each of:
    mitigate = ["A"]
    [data]      seed, probe_per_domain, dir (an existing data directory instead of building one)
    [train]     future_tasks, set (KEY=VALUE overrides for every `train run`)
    [extract]   token_cap_per_span, hidden_dtype (a table: family -> float16 or float32),
                codec (extract --codec: lossless, bitround:K or int8-token; every family's store)
    [analyze]   layer_stride
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from repcollapse.cli.demo import DemoSettings
from repcollapse.store_schema.schema import HIDDEN_DTYPES


class StudyError(ValueError):
    """A STUDY.toml value is wrong; the message names the field (exit code 2)."""

    exit_code = 2


def _fail(where: str, name: str, expected: str, found: Any) -> None:
    raise StudyError(f"{where}: field '{name}': expected {expected}, found {found!r}")


_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Family:
    """One model family: an embedded model name (`train base --model NAME`) or an HF directory."""

    label: str
    """Directory and store name (the embedded name, or the directory's name)."""
    model: str
    """What `train base --model` gets: the embedded name or the directory's path."""
    hidden_dtype: str = "float16"
    """`extract --hidden-dtype` of the family's store: float32 for a family whose hidden states
    exceed float16 (``FAMILY_HIDDEN_DTYPES``, or ``[extract] hidden_dtype``)."""


@dataclass(frozen=True)
class StudyConfig:
    name: str
    """`name`: the study's name (letters, digits, '_', '.', '-')."""
    families: tuple[Family, ...]
    """`families`: embedded model names or HF model directories, one family each."""
    sequences: tuple[str, ...]
    """`sequences`: shipped `train run` config names or .toml paths."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """`seeds`: run seeds; every (family, sequence) is trained once per seed."""
    budget: str = "demo"
    """`budget`: demo or paper."""
    mitigations: tuple[str, ...] = ()
    """`mitigations`: mitigation suffixes; config <sequence>_<mitigation> must be shipped."""
    mitigate: tuple[str, ...] = ("A",)
    """`mitigate`: the sequences the mitigations are applied to."""
    data_seed: int = 0
    """`[data] seed`: seed of `data build`."""
    probe_per_domain: int = DemoSettings.probe_per_domain
    """`[data] probe_per_domain`: probe examples per domain."""
    data_dir: str | None = None
    """`[data] dir`: an existing data directory (with pools/) instead of building one."""
    future_tasks: tuple[str, ...] = DemoSettings.future_tasks
    """`[train] future_tasks`: future tasks evaluated (["all"] = every task)."""
    train_set: tuple[str, ...] = ()
    """`[train] set`: KEY=VALUE overrides passed to every `train run --set`."""
    token_cap_per_span: int = DemoSettings.token_cap_per_span
    """`[extract] token_cap_per_span`: stored tokens per (domain, span) cell."""
    codec: str = "lossless"
    """`[extract] codec`: `extract --codec` of every family's store (docs/store.md, Codecs)."""
    layer_stride: int = DemoSettings.layer_stride
    """`[analyze] layer_stride`: analyse every n-th layer (plus the last)."""
    source: str = "STUDY.toml"
    """The file the study was read from (not a key)."""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def configs(self) -> tuple[str, ...]:
        """Every `train run` config of one (family, seed): the sequences, then each mitigation
        of each mitigated sequence (config ``<sequence>_<mitigation>``)."""
        out = list(self.sequences)
        for m in self.mitigations:
            out += [f"{s}_{m}" for s in self.mitigate]
        return tuple(dict.fromkeys(out))

    def train_overrides(self) -> tuple[str, ...]:
        """``--set`` values of every `train run` (the same for every cell: equal evaluation
        settings everywhere, so stages are comparable and shareable with --reuse)."""
        out = []
        if self.future_tasks != ("all",):
            names = ", ".join(f'"{t}"' for t in self.future_tasks)
            out.append(f"budget.{self.budget}.eval.future_tasks=[{names}]")
        return (*out, *self.train_set)


_TOP = {
    "name",
    "budget",
    "seeds",
    "families",
    "sequences",
    "mitigations",
    "mitigate",
    "data",
    "train",
    "extract",
    "analyze",
}
_SECTIONS = {
    "data": {"seed", "probe_per_domain", "dir"},
    "train": {"future_tasks", "set"},
    "extract": {"token_cap_per_span", "hidden_dtype", "codec"},
    "analyze": {"layer_stride"},
}


def _strs(where: str, name: str, v: Any, *, empty: bool = False) -> tuple[str, ...]:
    ok = isinstance(v, list) and all(isinstance(x, str) and x for x in v)
    if not ok or (not empty and not v):
        _fail(where, name, "a" + ("" if empty else " non-empty") + " list of strings", v)
    if len(set(v)) != len(v):
        _fail(where, name, "no repeated entries", v)
    return tuple(v)


def _int(where: str, name: str, v: Any, lo: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        _fail(where, name, f"an integer >= {lo}", v)
    return v


def _known_configs() -> set[str]:
    from repcollapse import train

    return {p.stem for p in (Path(train.__file__).parent / "configs").glob("*.toml")}


FAMILY_HIDDEN_DTYPES: dict[str, str] = {
    # Measured on the probe: max |h| 103,795 at position 0 and 96,870 after it (layers 8-17);
    # float16 ends at 65,504, so a float16 store refuses every Gemma 3 checkpoint.
    "gemma3-270m": "float32",
}
"""Embedded families whose store needs another hidden dtype than float16 (docs/study.md)."""


def _hidden_dtypes(where: str, value: Any, labels: list[str]) -> dict[str, str]:
    """``[extract] hidden_dtype``: {family label: float16 | float32}, families of the study."""
    if not isinstance(value, dict):
        _fail(where, "extract.hidden_dtype", 'a table of family = "float16" | "float32"', value)
    for label, dtype in value.items():
        if label not in labels:
            _fail(where, f"extract.hidden_dtype.{label}", f"one of the families {labels}", label)
        if dtype not in HIDDEN_DTYPES:
            _fail(where, f"extract.hidden_dtype.{label}", f"one of {list(HIDDEN_DTYPES)}", dtype)
    return dict(value)


def _family(where: str, entry: str, base: Path) -> Family:
    from repcollapse.train.base import EMBEDDED_MODELS

    if entry in EMBEDDED_MODELS:
        return Family(entry, entry, FAMILY_HIDDEN_DTYPES.get(entry, "float16"))
    path = (base / entry).resolve() if not Path(entry).is_absolute() else Path(entry)
    if not (path / "config.json").is_file():
        _fail(
            where,
            "families",
            f"embedded model names {sorted(EMBEDDED_MODELS)} or HF model directories",
            entry,
        )
    return Family(path.name, str(path))


def parse_study(raw: dict[str, Any], where: str, base: Path = Path(".")) -> StudyConfig:
    """A StudyConfig from parsed TOML; ``where`` names the file in messages, ``base`` is the
    folder relative directory paths are resolved against."""
    for key in raw:
        if key not in _TOP:
            _fail(where, key, f"one of {sorted(_TOP)}", "an unknown field")
    for sec, keys in _SECTIONS.items():
        val = raw.get(sec, {})
        if not isinstance(val, dict):
            _fail(where, sec, "a table", val)
        for k in val:
            if k not in keys:
                _fail(where, f"{sec}.{k}", f"one of {sorted(keys)}", "an unknown field")
    name = raw.get("name")
    if not isinstance(name, str) or not _LABEL.match(name):
        _fail(where, "name", "a name of letters, digits, '_', '.', '-'", name)
    budget = raw.get("budget", "demo")
    if budget not in ("demo", "paper"):
        _fail(where, "budget", "'demo' or 'paper'", budget)
    seeds = raw.get("seeds", [0, 1, 2])
    if not isinstance(seeds, list) or not seeds:
        _fail(where, "seeds", "a non-empty list of integers >= 0", seeds)
    seeds = tuple(_int(where, "seeds", s, 0) for s in seeds)
    if len(set(seeds)) != len(seeds):
        _fail(where, "seeds", "no repeated seeds", list(seeds))
    fam_entries = _strs(where, "families", raw.get("families"))
    families = tuple(_family(where, f, base) for f in fam_entries)
    labels = [f.label for f in families]
    if len(set(labels)) != len(labels):
        _fail(where, "families", "distinct family names", labels)
    dtypes = _hidden_dtypes(where, raw.get("extract", {}).get("hidden_dtype", {}), labels)
    families = tuple(replace(f, hidden_dtype=dtypes.get(f.label, f.hidden_dtype)) for f in families)
    known = _known_configs()
    sequences = _strs(where, "sequences", raw.get("sequences"))
    resolved = []
    for s in sequences:
        if s.endswith(".toml") and (base / s).is_file():  # your own config, by path
            resolved.append(str((base / s).resolve()))
        elif s in known:
            resolved.append(s)
        else:
            _fail(where, "sequences", f"shipped configs {sorted(known)} or .toml paths", s)
    sequences = tuple(resolved)
    mitigations = _strs(where, "mitigations", raw.get("mitigations", []), empty=True)
    mitigate = _strs(where, "mitigate", raw.get("mitigate", ["A"]), empty=True)
    for m in mitigations:
        for s in mitigate:
            if f"{s}_{m}" not in known:
                _fail(where, "mitigations", f"a shipped config {s}_{m} for sequence {s}", m)
    data, tr = raw.get("data", {}), raw.get("train", {})
    ex, an = raw.get("extract", {}), raw.get("analyze", {})
    data_dir = data.get("dir")
    if data_dir is not None:
        if not isinstance(data_dir, str) or not (base / data_dir / "pools").is_dir():
            _fail(where, "data.dir", "a data directory with pools/", data_dir)
        data_dir = str((base / data_dir).resolve())
    train_set = _strs(where, "train.set", tr.get("set", []), empty=True)
    for s in train_set:
        if "=" not in s:
            _fail(where, "train.set", "KEY=VALUE strings", s)
    return StudyConfig(
        name=name,
        families=families,
        sequences=sequences,
        seeds=seeds,
        budget=budget,
        mitigations=mitigations,
        mitigate=mitigate,
        data_seed=_int(where, "data.seed", data.get("seed", 0), 0),
        probe_per_domain=_int(
            where,
            "data.probe_per_domain",
            data.get("probe_per_domain", StudyConfig.probe_per_domain),
            4,
        ),
        data_dir=data_dir,
        future_tasks=_strs(where, "train.future_tasks", tr.get("future_tasks", ["sentiment"])),
        train_set=train_set,
        token_cap_per_span=_int(
            where,
            "extract.token_cap_per_span",
            ex.get("token_cap_per_span", StudyConfig.token_cap_per_span),
            1,
        ),
        codec=_codec(where, ex.get("codec", StudyConfig.codec)),
        layer_stride=_int(
            where, "analyze.layer_stride", an.get("layer_stride", StudyConfig.layer_stride), 1
        ),
        source=where,
        raw=raw,
    )


def _codec(where: str, value: Any) -> str:
    from repcollapse.store_schema.codecs import CODEC_NAMES, parse_codec

    try:
        parse_codec(value)
    except ValueError:
        _fail(where, "extract.codec", f"one of {list(CODEC_NAMES)}", value)
    return value


def load_study(path: str | Path) -> StudyConfig:
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: expected a STUDY.toml file, found nothing there")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise StudyError(f"{path}: expected valid TOML, found an error: {e}") from None
    return parse_study(raw, str(path), path.parent)

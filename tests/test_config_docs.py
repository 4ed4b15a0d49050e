"""docs/config.md documents every configuration key: each field of each config dataclass has
help text, and the generator reads both `help` metadata and attribute docstrings."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _gen():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    return gen


def test_every_config_key_has_help() -> None:
    gen = _gen()
    missing = []
    for _title, _where, cls, _other, _name in gen.config_sections():
        helps = gen.field_docs(cls)
        for f in dataclasses.fields(cls):
            if (f.repr or f.compare) and not helps[f.name].strip():
                missing.append(f"{cls.__name__}.{f.name}")
    assert missing == [], f"fields without help (add metadata['help'] or a docstring): {missing}"


def test_page_lists_each_key_with_default_and_help() -> None:
    text = _gen().config_markdown()
    assert '| `report_to` | `str` | `"none"` |' in text
    assert '| `probe_extra` | `str` | `""` |' in text
    # the paper budget column shows where it differs from the defaults
    assert "| `tokens_per_stage` | `int` | `1600` | `4000000` |" in text
    assert "| `include_sinks` | `bool` | `false` | keep attention-sink tokens" in text


def test_field_docs_reads_metadata_and_docstrings() -> None:
    gen = _gen()

    @dataclasses.dataclass
    class Example:
        a: int = dataclasses.field(default=1, metadata={"help": "from  metadata"})
        b: str = "x"
        """From the
        docstring."""
        c: float = 0.0

    assert gen.field_docs(Example) == {
        "a": "from metadata",
        "b": "From the docstring.",
        "c": "",
    }

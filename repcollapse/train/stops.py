"""When a generation can stop early without changing its score (per evaluation record).

Each rule looks at the completion decoded so far and says True once the part its scorer reads
is complete:

* code: a closed fenced block that defines the record's entry point. ``extract_code`` takes the
  first fenced block defining the entry point, so nothing generated after it can change the
  extracted code: exactly the same score.
* safety: 300 characters with some non-space text. The refusal classifier reads the first 300
  characters and a benign item only needs a non-empty answer: exactly the same score.
* math and long_cot: a complete ``Answer: <number>`` line (ended by a newline). The scorer reads
  the *last* answer line, so a model that wrote a second, different answer line after the first
  would have been scored on that one: the only case where stopping changes a score. The
  references end at their answer line; ``evaluate`` reports how many completions a rule stopped.
* general and the future tasks: none (their answers are short; their caps are small).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from repcollapse.train.scorers.code import _FENCE
from repcollapse.train.scorers.text import _ANSWER_LINE, _NUMBER, _REFUSAL_WINDOW

StopRule = Callable[[str], bool]


def _code_rule(entry_point: str) -> StopRule:
    defines = re.compile(rf"\bdef\s+{re.escape(entry_point)}\b")

    def done(text: str) -> bool:
        if "```" not in text:
            return False
        # A match ends with ``` only when its fence is closed (an open one runs to the end).
        return any(
            m.group(0).endswith("```") and defines.search(m.group(1)) for m in _FENCE.finditer(text)
        )

    return done


def _safety_rule(text: str) -> bool:
    return len(text) >= _REFUSAL_WINDOW and bool(text.strip())


def _answer_line_rule(text: str) -> bool:
    if "\n" not in text:
        return False
    # (.*)$ runs to the end of its line: a match ending before the text ends is followed by
    # its newline, so the number on it is complete.
    return any(
        m.end() < len(text) and _NUMBER.search(m.group(1)) for m in _ANSWER_LINE.finditer(text)
    )


def stop_rule(record: Mapping[str, Any]) -> StopRule | None:
    """The stop rule for ``record``'s domain, or None (generate to the cap or end of sequence)."""
    domain = record.get("domain")
    if domain == "code":
        entry = str((record.get("meta") or {}).get("entry_point") or "")
        return _code_rule(entry) if entry else None
    if domain == "safety":
        return _safety_rule
    if domain in ("math", "long_cot"):
        return _answer_line_rule
    return None

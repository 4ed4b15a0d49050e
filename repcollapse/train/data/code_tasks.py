"""Small Python function tasks: a prompt, a correct reference in a ```python fence, and tests.

Each template picks a function name, parameters (thresholds, letters, factors) and random test
inputs; the expected values are computed here by a plain Python function that mirrors the
reference source, and written into ``meta['tests']`` as ``assert`` statements. A test in the
suite runs every generated reference through the sandboxed scorer, so a mismatch between
the source and the mirror is caught.
"""

from __future__ import annotations

import random

from repcollapse.train.data import code_templates_a, code_templates_b
from repcollapse.train.data.common import Example, choose_template

TEMPLATES = code_templates_a.TEMPLATES + code_templates_b.TEMPLATES


def generate(rng: random.Random) -> Example:
    return choose_template(rng, TEMPLATES)

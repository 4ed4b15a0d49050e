"""Instruction-following tasks with checkable constraints (``meta['checks']``).

Each check is a small dict interpreted by ``repcollapse.train.scorers.general``; the reference response
satisfies every check (a test asserts it). Check types: exact, line_count, distinct_lines,
lines_start_with, all_upper, all_lower, contains, ends_with, max_words, word_count,
json_object.
"""

from __future__ import annotations

import random

from repcollapse.train.data import general_format_tasks, general_word_tasks
from repcollapse.train.data.common import Example, choose_template

TEMPLATES = general_format_tasks.TEMPLATES + general_word_tasks.TEMPLATES


def generate(rng: random.Random) -> Example:
    return choose_template(rng, TEMPLATES)

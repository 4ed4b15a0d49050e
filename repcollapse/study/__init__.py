"""`repcollapse study`: the experimental matrix (families x sequences x seeds x mitigations, one
budget) as one resumable, shardable command (docs/study.md)."""

from repcollapse.study.config import Family, StudyConfig, StudyError, load_study, parse_study
from repcollapse.study.executors import in_process_executor, subprocess_executor
from repcollapse.study.merge import merge_and_report, merge_tables, study_inputs
from repcollapse.study.plan import Cell, Shard, plan_cells
from repcollapse.study.runner import StudyRun, run_study

__all__ = [
    "Cell",
    "Family",
    "Shard",
    "StudyConfig",
    "StudyError",
    "StudyRun",
    "in_process_executor",
    "load_study",
    "merge_and_report",
    "merge_tables",
    "parse_study",
    "plan_cells",
    "run_study",
    "study_inputs",
    "subprocess_executor",
]

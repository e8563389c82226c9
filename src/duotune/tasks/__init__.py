"""Deterministic synthetic tasks (registry `task`): counting, counting_mcq, geometry, grounding (vision,
PIL-drawn) and arithmetic (text), each with exact answers and programmatic demonstrations.

`make_examples` / `write_task` (behind `duotune data make`) build datasets whose train and test splits
never share a seed or an item. Imports PIL and `duotune.data.example`; no torch, no models.
"""

from duotune.tasks import arithmetic, geometry, vision  # noqa: F401  (fill the `task` registry)
from duotune.tasks.base import (
    TEST_FRACTION,
    Param,
    TaskSpec,
    fewshot_messages,
    item_rng,
    make_examples,
    make_rows,
    resolve_params,
    row_to_example,
    split_of,
    task_params,
    tasks,
    write_task,
)

__all__ = [
    "TEST_FRACTION", "Param", "TaskSpec", "fewshot_messages", "item_rng", "make_examples", "make_rows",
    "resolve_params", "row_to_example", "split_of", "task_params", "tasks", "write_task",
]

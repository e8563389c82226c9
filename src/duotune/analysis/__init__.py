"""Training-dynamics analysis: time-to-accuracy, token-distribution shift, learning-dynamics map, and
the method comparison (`duotune compare`, `duotune analyze`).

Reads run folders and checkpoints; the comparison drives `duotune.trainers`. Importing this package
loads no torch (the CLI builds its parser from it); the heavy modules import lazily.
"""

from duotune.analysis.analyze import add_analyze_arguments, run_analyze_command
from duotune.analysis.compare import add_compare_arguments, run_compare, run_compare_command
from duotune.analysis.compare_config import CompareConfig
from duotune.analysis.time_to_accuracy import (
                                               CurvePoint,
                                               Reached,
                                               default_target,
                                               time_to_accuracy_table,
                                               time_to_target,
)

__all__ = ["CompareConfig", "CurvePoint", "Reached", "add_analyze_arguments", "add_compare_arguments",
           "default_target", "run_analyze_command", "run_compare", "run_compare_command",
           "time_to_accuracy_table", "time_to_target"]

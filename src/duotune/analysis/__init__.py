"""Training-dynamics analysis: time-to-accuracy, token-distribution shift, learning-dynamics map.

Reads run folders and checkpoints; never trains.
"""

from duotune.analysis.time_to_accuracy import (CurvePoint, Reached, default_target,
                                               time_to_accuracy_table, time_to_target)

__all__ = ["CurvePoint", "Reached", "default_target", "time_to_accuracy_table", "time_to_target"]

"""Training: one loop for SFT, GRPO, GRPO-D, LUFFY, SRFT, RL + SFT loss and staged pipelines.

`train(TrainConfig) -> RunResult`; methods are entries of the `method` registry (see `methods`),
so `duotune list method` shows them. Importing this package fills the `method` and `demo_entry`
registries; it loads no model.
"""

from duotune.trainers.config import TrainConfig, stage_configs
from duotune.trainers.loop import RunResult, train
from duotune.trainers.methods import DEMO_ENTRIES, METHODS, DemoEntry, LossInputs, Method

__all__ = ["DEMO_ENTRIES", "METHODS", "DemoEntry", "LossInputs", "Method", "RunResult", "TrainConfig",
           "stage_configs", "train"]

"""Methods as registered bundles on the four SFT+RL axes (DESIGN.md "The SFT+RL family").

Each module holds one method family: its typed settings model (the recipe's `algo:` block, validated
when the config loads), its loss, and its registration. Axis 1 (where demos enter) is `demo_entry`;
axes 2-4 (demo-token weight, mixing schedule, group statistics) are settings of the methods that use
them. Importing this package fills the `method` and `demo_entry` registries.
"""

from duotune.trainers.methods import (  # noqa: F401 - register
    chord,
    distill,
    grpo,
    hpt,
    luffy,
    prefix,
    relift,
    rl_plus,
    rl_sft_loss,
    sft,
    srft,
)
from duotune.trainers.methods.base import (
                                           DEMO_ENTRIES,
                                           METHODS,
                                           DemoEntry,
                                           LossInputs,
                                           LossOut,
                                           Method,
                                           MethodSettings,
                                           Needs,
                                           settings_for,
)

__all__ = ["DEMO_ENTRIES", "METHODS", "DemoEntry", "LossInputs", "LossOut", "Method", "MethodSettings",
           "Needs", "settings_for"]

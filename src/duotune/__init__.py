"""duotune: post-train language and vision-language models for reasoning.

SFT, GRPO, GRPO-D, LUFFY, SRFT and the sequential pipelines are configs of one trainer
(`duotune.trainers`); the maths lives in `duotune.algos`, rewards in `duotune.rewards`,
evaluation in `duotune.eval`. This top-level module imports nothing heavy.
"""

__version__ = "0.1.0"

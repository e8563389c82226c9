"""Vision studies of issue 7: the warm-up checkpoint, OThink-MR1 (SFT / GRPO / GRPO-D, cross-task)
and VLAA-Thinking (mixed reward; GRPO vs SFT vs SFT -> GRPO), each one command writing its tables.

Run `python -m duotune.studies.{warmup,othink,vlaa} --scale tiny|cpu --out DIR`. Loads no model on import.
"""

from duotune.studies.common import SCALES, Scale, evaluate_examples, get_scale

__all__ = ["SCALES", "Scale", "evaluate_examples", "get_scale"]

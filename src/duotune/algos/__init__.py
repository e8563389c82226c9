"""duotune.algos: the algorithm core as pure functions on tensors, registered by name.

Advantages, policy losses (PPO clip, LUFFY mixed-policy, SRFT, RL-PLUS, SFT NLL), demo-token
weights, mixing schedules, per-question gates (HPT), aggregation, KL estimators and controllers,
entropy, rollout (sampler/trainer mismatch) correction. No models, no I/O, no config objects: explicit
tensors and scalars in, (value, metrics) out. Imports torch, duotune.errors and duotune.registry only.
"""

from duotune.algos.advantages import ADVANTAGES, advantage, frac_zero_std, group_advantages, grouped_advantages
from duotune.algos.aggregation import AGGREGATIONS, aggregate
from duotune.algos.demo import DEMO_WEIGHTS, demo_objective, demo_weight, luffy_shaping
from duotune.algos.distill import DIVERGENCES, divergence, forward_kl_topk, jsd_topk, reverse_kl_pg
from duotune.algos.entropy import entropy_from_logits
from duotune.algos.gates import GATES, gate
from duotune.algos.kl import (
                                      KL_CONTROLLERS,
                                      KL_ESTIMATORS,
                                      AdaptiveKL,
                                      FixedKL,
                                      GrpoDKL,
                                      build_kl_controller,
                                      grpo_d_beta,
                                      kl_estimate,
)
from duotune.algos.losses import POLICY_LOSSES, mixed_policy_loss, policy_loss, ppo_clip_loss, sft_nll
from duotune.algos.prefix import cosine_decay, prefix_sft_loss, top_fraction_mask, uft_hint_segments
from duotune.algos.rl_plus import exploration_advantage, mis_ratio, rl_plus_loss
from duotune.algos.rollout_correction import (
    ROLLOUT_CORRECTIONS,
    logp_mismatch,
    no_correction,
    rollout_correction,
    truncated_is,
)
from duotune.algos.schedules import MIX_SCHEDULES, mix_schedule
from duotune.algos.srft import srft_loss

__all__ = [
    "ADVANTAGES", "AGGREGATIONS", "DEMO_WEIGHTS", "KL_CONTROLLERS", "KL_ESTIMATORS", "MIX_SCHEDULES",
    "POLICY_LOSSES", "ROLLOUT_CORRECTIONS", "AdaptiveKL", "FixedKL", "GrpoDKL", "advantage", "aggregate",
    "build_kl_controller", "demo_objective", "demo_weight", "entropy_from_logits", "frac_zero_std",
    "group_advantages", "grouped_advantages", "grpo_d_beta", "kl_estimate", "luffy_shaping", "mix_schedule",
    "mixed_policy_loss", "policy_loss", "ppo_clip_loss", "sft_nll", "srft_loss", "GATES",
    "exploration_advantage", "gate", "mis_ratio", "rl_plus_loss", "cosine_decay", "prefix_sft_loss",
    "top_fraction_mask", "uft_hint_segments", "DIVERGENCES", "divergence", "forward_kl_topk", "jsd_topk",
    "reverse_kl_pg", "logp_mismatch", "no_correction", "rollout_correction", "truncated_is",
]

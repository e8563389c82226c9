"""Rewards (SPEC 2 and 3) and the one verifier training and evaluation share.

A reward is `(completions: list[str], **columns) -> list[float | None]` (TRL convention; `answer` is
the gold column, `reward_type` routes `mixed`). math-verify runs only inside `GradingPool` worker
processes, so importing this package pulls in neither math-verify nor torch.
"""

from duotune.rewards.base import PooledReward, Reward, RewardError
from duotune.rewards.build import REWARDS, describe_rewards, from_verl_compute_score, get_reward, validate_reward_name
from duotune.rewards.extract import extract_answer, normalize_mcq
from duotune.rewards.final import EXTRACTION_MODES, answer_text, final_answer
from duotune.rewards.functions import box_iou, math_equal, think_answer_format
from duotune.rewards.manager import RewardManager
from duotune.rewards.open_rm import relative_reward
from duotune.rewards.pool import GradingPool, Outcome, default_pool

__all__ = [
    "EXTRACTION_MODES", "REWARDS", "answer_text", "final_answer", "GradingPool", "Outcome", "PooledReward", "Reward", "RewardError", "RewardManager",
    "box_iou", "default_pool", "describe_rewards", "extract_answer", "from_verl_compute_score",
    "get_reward", "math_equal", "normalize_mcq", "relative_reward", "think_answer_format",
    "validate_reward_name",
]

"""Model loading (aliases, local folders, hub ids), saving, and micro-batched per-token log-probs.

`load_model(name) -> ModelBundle`; `compute_logprobs(model, ids, attn, loss_mask)`; registry
`MODELS` (kind "model") lists the aliases. Never imports trainers, rollout or rewards.
"""

from duotune.models import embedded, tiny, vision  # noqa: F401  (registers the aliases)
from duotune.models.bundle import MODELS, ModelBundle, freeze_vision_tower, save_model
from duotune.models.loading import load_model
from duotune.models.logprobs import compute_logprobs

__all__ = ["MODELS", "ModelBundle", "compute_logprobs", "freeze_vision_tower", "load_model", "save_model"]

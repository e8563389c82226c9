"""Teacher forcing of fixed responses: per-token log-probs and entropies of (prompt, response) pairs
under a model, the measurement behind the token-shift figure and the learning-dynamics map (SPEC 9).

Prompts are rendered exactly as in training (`rollout.PromptEncoder`, response + EOS), scored with
`models.compute_logprobs`. Imports torch, `duotune.models`, `duotune.rollout`; never trainers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from duotune.data import Example
from duotune.models import compute_logprobs
from duotune.rollout import PromptEncoder, build_groups, collate


@dataclass
class Forced:
    """Response-aligned [N, T] tensors: log p of each response token, the entropy of the next-token
    distribution there, and the mask of real response tokens."""

    logp: torch.Tensor
    entropy: torch.Tensor
    mask: torch.Tensor

    def mean_logp(self) -> float:
        """Token-mean log-prob over every response token of every row."""
        return float((self.logp * self.mask).sum() / self.mask.sum().clamp(min=1))


def with_responses(examples: list[Example], responses: list[str]) -> list[Example]:
    """The examples with `responses` as their fixed (demo) responses."""
    return [replace(ex, demo=r) for ex, r in zip(examples, responses, strict=True)]


def teacher_force(bundle: Any, examples: list[Example], *, max_tokens: int = 512,
                  token_budget: int = 8192) -> Forced:
    """Score each example's `demo` as the response to its prompt under `bundle.model` (no grad)."""
    encoder = PromptEncoder(bundle)
    rollout = build_groups(None, encoder, examples, None, group_size=0, demo_in_group=False,
                           demo_rows=True, max_completion_length=max_tokens)
    batch = collate(rollout, encoder)
    model = bundle.model
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logp, ent = compute_logprobs(model, batch.input_ids.to(device), batch.attention_mask.to(device),
                                         batch.loss_mask.to(device), token_budget=token_budget,
                                         with_entropy=True)
    finally:
        model.train(was_training)
    pos = batch.resp_pos.to(device)
    mask = batch.response_mask.to(device)
    return Forced(logp.gather(1, pos) * mask, ent.gather(1, pos) * mask, mask)

"""Micro-batched log-probs and the exact gradient of a full-batch loss, one micro-batch at a time.

Micro-batches are cut by a token budget (rows sorted by length, padded size <= budget). When a batch
needs several, the loss is first evaluated on no-grad log-probs of the whole batch, its gradient
w.r.t. the per-token log-probs/entropies is taken, and each micro-batch is replayed with grad and
back-propagated with that upstream gradient: the result equals the full-batch gradient for every
loss (any aggregation, batch-level normalisers), so micro-batching never changes the maths.
Data-parallel (`parallel`, a `trainers.distributed.Parallel`): forwards go through the wrapped model,
only the last micro-batch's backward communicates, and sharded ranks run equally many forwards.
Imports torch, `duotune.models` and `duotune.rollout`; never rewards or data loaders.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, NamedTuple

import torch

from duotune.models import compute_logprobs
from duotune.models.batching import plan_micro_batches
from duotune.models.logprobs import shared_prompt_logprobs, topk_logprobs
from duotune.rollout import CollatedBatch, PromptEncoder

LossFn = Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, dict[str, float]]]


def micro_batches(batch: CollatedBatch, token_budget: int) -> list[torch.Tensor]:
    """Row-index groups whose padded size (rows x longest row) stays within `token_budget`: the one
    planner (`models.batching.plan_micro_batches`) that the log-prob forward also uses."""
    every = torch.ones(batch.num_rows, dtype=torch.bool, device=batch.attention_mask.device)
    return [mb.rows for mb in plan_micro_batches(batch.attention_mask, every, token_budget)]


def _plan(batch: CollatedBatch, token_budget: int, parallel: Any) -> tuple[list[torch.Tensor], int]:
    """Micro-batches and how many padding forwards to add: sharded ranks (FSDP2, DeepSpeed gather
    parameters inside every forward) must all run the same number, so a rank with fewer halves its
    largest groups (smaller groups stay within the budget), and one with too few rows re-runs its
    last row with no gradient."""
    mbs = micro_batches(batch, token_budget)
    if parallel is None or not parallel.sharded:
        return mbs, 0
    want = parallel.same_count(len(mbs))
    while len(mbs) < want and max(len(g) for g in mbs) > 1:
        big = max(range(len(mbs)), key=lambda i: len(mbs[i]))
        g = mbs.pop(big)
        mbs[big:big] = [g[:len(g) // 2], g[len(g) // 2:]]
    return mbs, want - len(mbs)


def response_logprobs(model: Any, encoder: PromptEncoder, batch: CollatedBatch, *, with_entropy: bool,
                      entropy_grad: bool = True, temperature: float = 1.0,
                      share_prompts: bool = True, extra_ids: torch.Tensor | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(response token) and entropy, response-aligned [n, T], for one micro-batch.

    share_prompts: when rows continue the same prompt (a GRPO group) and the batch is text only,
    each prompt runs once and its KV cache serves its rows (`shared_prompt_logprobs`); same values.
    extra_ids [n, T, k]: more token ids read at each response position (a teacher's top-k);
    logp is then [n, T, 1 + k], column 0 the response token's.
    """
    device = batch.input_ids.device
    if (share_prompts and batch.prompt_index is not None and not batch.token_fields
            and not any(batch.images) and len(torch.unique(batch.prompt_index)) < batch.num_rows):
        return shared_prompt_logprobs(model, batch.input_ids, batch.attention_mask, batch.resp_pos,
                                      batch.response_mask, batch.prompt_index, with_entropy=with_entropy,
                                      entropy_grad=entropy_grad, temperature=temperature, extra_ids=extra_ids)
    extra = {k: v.to(device) for k, v in encoder.pixel_inputs(
        [im for row in batch.images for im in row]).items()}
    extra.update({k: v.to(device) for k, v in batch.token_fields.items()})
    logp, ent = compute_logprobs(
        model, batch.input_ids, batch.attention_mask, batch.loss_mask, extra_inputs=extra or None,
        token_budget=batch.input_ids.numel(), with_entropy=with_entropy, entropy_grad=entropy_grad,
        temperature=temperature, extra_ids=_full_positions(batch, extra_ids))
    mask = batch.response_mask.to(logp.dtype)
    pos = batch.resp_pos if extra_ids is None else batch.resp_pos[..., None].expand(-1, -1, logp.shape[-1])
    logp = logp.gather(1, pos) * (mask if extra_ids is None else mask[..., None])
    ent = ent.gather(1, batch.resp_pos) * mask if ent is not None else None
    return logp, ent


def _full_positions(batch: CollatedBatch, ids: torch.Tensor | None) -> torch.Tensor | None:
    """Response-aligned [n, T, k] ids placed at their full-sequence positions [n, L, k]."""
    if ids is None:
        return None
    full = torch.zeros((*batch.input_ids.shape, ids.shape[-1]), dtype=ids.dtype, device=ids.device)
    i, t = batch.response_mask.bool().nonzero(as_tuple=True)
    full[i, batch.resp_pos[i, t]] = ids[i, t]
    return full


def batch_logprobs(model: Any, encoder: PromptEncoder, batch: CollatedBatch, token_budget: int, *,
                   with_entropy: bool, temperature: float = 1.0, share_prompts: bool = True,
                   parallel: Any = None, extra_ids: torch.Tensor | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """No-grad response log-probs/entropy for all rows (reference, old policy, or pass one)."""
    mbs, pads = _plan(batch, token_budget, parallel)
    n, t = batch.response_mask.shape
    wide = () if extra_ids is None else (1 + extra_ids.shape[-1],)
    logp = torch.zeros((n, t, *wide), dtype=torch.float32, device=batch.input_ids.device)
    ent = torch.zeros((n, t), dtype=torch.float32, device=logp.device) if with_entropy else None
    with torch.no_grad():
        for rows in mbs + [mbs[-1][-1:]] * pads:  # a padding forward rewrites its row's same values
            lp, en = response_logprobs(model, encoder, batch.select(rows), with_entropy=with_entropy,
                                       temperature=temperature, share_prompts=share_prompts,
                                       extra_ids=_take(extra_ids, rows))
            logp[rows] = lp.float()
            if ent is not None and en is not None:
                ent[rows] = en.float()
    return logp, ent


def _take(x: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    return None if x is None else x[rows.to(x.device)]


class TeacherScores(NamedTuple):
    """A frozen teacher on the student's rows, response-aligned: log p_T(sampled token) [N, T] and,
    with top_k > 0, its k most likely ids [N, T, k] and their log-probs [N, T, k]."""

    logp: torch.Tensor
    topk_ids: torch.Tensor | None = None
    topk_logp: torch.Tensor | None = None

    def select(self, rows: torch.Tensor) -> TeacherScores:
        return TeacherScores(*(_take(x, rows) for x in self))


def teacher_scores(teacher: Any, encoder: PromptEncoder, batch: CollatedBatch, token_budget: int, spec: Any,
                   share_prompts: bool = True) -> TeacherScores:
    """The teacher's log-probs of every response token (no grad) at `spec.temperature`, and its top
    `spec.top_k` tokens per position (candidates: the tokenizer's ids) when the loss reads them."""
    if not spec.top_k:
        logp = batch_logprobs(teacher, encoder, batch, token_budget, with_entropy=False,
                              temperature=spec.temperature, share_prompts=share_prompts)[0]
        return TeacherScores(logp)
    n, t = batch.response_mask.shape
    dev = batch.input_ids.device
    out = TeacherScores(torch.zeros((n, t), device=dev), torch.zeros((n, t, spec.top_k), dtype=torch.long,
                        device=dev), torch.zeros((n, t, spec.top_k), device=dev))
    for rows in micro_batches(batch, token_budget):
        sub = batch.select(rows)
        extra = {k: v.to(dev) for k, v in encoder.pixel_inputs([im for row in sub.images for im in row]).items()}
        extra.update({k: v.to(dev) for k, v in sub.token_fields.items()})
        full = topk_logprobs(teacher, sub.input_ids, sub.attention_mask, sub.loss_mask, spec.top_k,
                             extra_inputs=extra or None, token_budget=sub.input_ids.numel(),
                             temperature=spec.temperature, vocab_limit=len(encoder.tokenizer))
        mask = sub.response_mask
        out.logp[rows] = full[0].gather(1, sub.resp_pos) * mask
        pos = sub.resp_pos[..., None].expand(-1, -1, spec.top_k)
        out.topk_ids[rows] = full[1].gather(1, pos) * mask[..., None].long()
        out.topk_logp[rows] = full[2].gather(1, pos) * mask[..., None]
    return out


def backward_full_batch(model: Any, encoder: PromptEncoder, batch: CollatedBatch, loss_fn: LossFn,
                        token_budget: int, *, with_entropy: bool, entropy_grad: bool = True,
                        share_prompts: bool = True, temperature: float = 1.0, parallel: Any = None,
                        extra_ids: torch.Tensor | None = None,
                        ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor, torch.Tensor | None]:
    """Back-propagate `loss_fn(logp, entropy)` over the whole batch; returns (loss, metrics, logp, H).

    One micro-batch: a plain forward/backward. Several: the two-pass replay described above.
    temperature: log-probs and entropy of softmax(logits / T), the policy that sampled at T.
    entropy_grad False: the loss only reads the entropy (metrics, stop-gradient weights), so it is
    computed outside autograd. extra_ids [N, T, k]: the loss gets logp [N, T, 1 + k] (see
    `response_logprobs`), replayed like any other column.
    With `parallel` (data-parallel ranks) the backward goes through accelerate, every micro-batch
    but the last only accumulates locally (`Parallel.accumulating`), and the last one averages the
    gradients over the ranks; a non-finite loss on any rank skips the backward on all of them
    (the returned loss is then NaN everywhere, so every rank skips the update).
    """
    mbs, pads = _plan(batch, token_budget, parallel)
    if len(mbs) + pads == 1:
        logp, ent = response_logprobs(model, encoder, batch, with_entropy=with_entropy,
                                      entropy_grad=entropy_grad, temperature=temperature,
                                      share_prompts=share_prompts, extra_ids=extra_ids)
        loss, metrics = loss_fn(logp, ent)
        if _all_finite(loss, parallel):
            _backward(loss, parallel)
        else:
            loss = loss * float("nan")
        return loss.detach(), metrics, logp.detach(), None if ent is None else ent.detach()
    logp0, ent0 = batch_logprobs(model, encoder, batch, token_budget, with_entropy=with_entropy,
                                 temperature=temperature, share_prompts=share_prompts, parallel=parallel,
                                 extra_ids=extra_ids)
    leaf_logp = logp0.clone().requires_grad_(True)
    leaf_ent = ent0.clone().requires_grad_(True) if ent0 is not None and entropy_grad else ent0
    loss, metrics = loss_fn(leaf_logp, leaf_ent)
    if not _all_finite(loss, parallel):
        return loss.detach() * float("nan"), metrics, logp0, ent0
    inputs = [leaf_logp] + ([leaf_ent] if leaf_ent is not None and leaf_ent.requires_grad else [])
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    g_logp = grads[0] if grads[0] is not None else torch.zeros_like(logp0)
    g_ent = grads[1] if len(grads) > 1 and grads[1] is not None else None
    need_ent = with_entropy and g_ent is not None
    runs = [(rows, 1.0) for rows in mbs] + [(mbs[-1][-1:], 0.0)] * pads  # padding: no gradient
    for i, (rows, weight) in enumerate(runs):
        last = i == len(runs) - 1
        with parallel.accumulating() if parallel is not None and not last else nullcontext():
            lp, en = response_logprobs(model, encoder, batch.select(rows), with_entropy=need_ent,
                                       temperature=temperature, share_prompts=share_prompts,
                                       extra_ids=_take(extra_ids, rows))
            surrogate = (lp * g_logp[rows].to(lp.dtype)).sum()
            if need_ent and en is not None:
                surrogate = surrogate + (en * g_ent[rows].to(en.dtype)).sum()
            _backward(surrogate if weight else surrogate * 0.0, parallel)
    return loss.detach(), metrics, logp0, ent0


def _all_finite(loss: torch.Tensor, parallel: Any) -> bool:
    finite = bool(torch.isfinite(loss))
    return parallel.all_true(finite) if parallel is not None else finite


def _backward(loss: torch.Tensor, parallel: Any) -> None:
    if parallel is not None:
        parallel.backward(loss)
    else:
        loss.backward()

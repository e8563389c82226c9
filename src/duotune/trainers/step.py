"""One training step: sample the groups, score them, compute advantages, then `num_iterations`
updates with the method's loss; returns one metrics record (SPEC 6 + issue 6 item 7).

Data flow as in DESIGN.md "How data flows in one RL step"; the method only supplies its loss.
Imports torch, rollout, rewards (through `methods`) and `trainers.compute`.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from duotune.errors import DuotuneError
from duotune.rollout import SamplingParams, build_groups, collate
from duotune.trainers.compute import backward_full_batch, batch_logprobs
from duotune.trainers.methods import METHODS, LossInputs, advantages, score_rollout
from duotune.trainers.optim import all_reduce_grads, prompt_indices
from duotune.trainers.rollout_log import rollout_rows


@dataclass
class StageState:
    """Everything a stage's steps share (built once per stage by `loop._run_stage`)."""

    cfg: Any
    bundle: Any
    encoder: Any
    sampler: Any
    reference: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    kl: Any
    examples: list[Any]
    accelerator: Any
    logger: Any
    bad_in_row: int = 0
    opt_steps: int = 0


def _rollout(st: StageState, step: int) -> tuple[Any, Any, dict[str, float]]:
    cfg, acc = st.cfg, st.accelerator
    method = METHODS.get(cfg.method)
    idx = prompt_indices(len(st.examples), cfg.prompts_per_step, step, acc.process_index,
                         acc.num_processes, cfg.run.seed, cfg.data.shuffle)
    examples = [st.examples[i] for i in idx]
    entry = method.demo_entry
    params = SamplingParams(n=1, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                            top_k=cfg.rollout.top_k, max_new_tokens=cfg.rollout.max_completion_length,
                            # a pure function of (seed, step, rank): resuming resamples identically
                            seed=cfg.run.seed * 7919 + step * 104729 + acc.process_index)
    rollout = build_groups(st.sampler, st.encoder, examples, params,
                           group_size=cfg.rollout.group_size if entry.on_policy else 0,
                           demo_in_group=entry.demo_in_group, demo_rows=entry.demo_rows,
                           max_completion_length=cfg.rollout.max_completion_length)
    batch = collate(rollout, st.encoder)
    return rollout, batch, {"n_prompts": float(len(examples))}


def train_step(st: StageState, step: int) -> dict[str, Any]:
    """Sample, score and update; the returned record holds every metric of this step."""
    cfg, model = st.cfg, st.bundle.model
    method = METHODS.get(cfg.method)
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    rollout, batch, record = _rollout(st, step)
    t_roll = time.perf_counter() - t0
    if method.uses_reward:
        rewards, rmetrics = score_rollout(rollout, cfg.reward)
        record.update(rmetrics)
    else:
        rewards = torch.zeros(batch.num_rows)
    adv, amet = advantages(cfg, rollout, rewards)
    record.update(amet)
    st.logger.add_rollouts(rollout_rows(rollout, rewards, adv))  # -> rollouts/step-NNNNNN.jsonl
    batch = _to(batch, device)
    mask = batch.response_mask.clone()
    if cfg.rollout.drop_truncated:  # DAPO overlong filtering: truncated samples leave the loss
        mask[batch.truncated & ~batch.is_demo] = 0
    budget = cfg.compute.token_budget
    share = cfg.compute.share_prompts
    ref_logp = (batch_logprobs(st.reference, st.encoder, batch, budget, with_entropy=False, share_prompts=share)[0]
                if st.reference is not None else None)
    # Old log-probs only matter when the same batch is reused (rho != 1); with one update rho == 1.
    old_logp = (batch_logprobs(model, st.encoder, batch, budget, with_entropy=False, share_prompts=share)[0]
                if cfg.num_iterations > 1 else None)
    t1 = time.perf_counter()
    for _ in range(cfg.num_iterations):
        inputs = LossInputs(cfg=cfg, batch=batch, mask=mask, rewards=rewards.to(device),
                            advantages=adv.to(device), old_logp=old_logp, ref_logp=ref_logp,
                            beta=float(st.kl.value), progress=st.opt_steps / max(1, cfg.steps * cfg.num_iterations))
        st.optimizer.zero_grad(set_to_none=True)
        loss, lmet, _, _ = backward_full_batch(model, st.encoder, batch, lambda lp, h, inputs=inputs: method.loss(inputs, lp, h),
                                               budget, with_entropy=True,
                                               entropy_grad=method.entropy_grad or bool(cfg.algo.entropy_coef),
                                               share_prompts=share)
        record.update(lmet)
        record.update(_update(st, loss, lmet))
    t_train = time.perf_counter() - t1
    n_tokens = float(batch.attention_mask.sum())
    record.update({"time/rollout": t_roll, "time/train": t_train,
                   "perf/tokens_per_s": n_tokens * cfg.num_iterations / max(t_train, 1e-9),
                   "train/lr": st.scheduler.get_last_lr()[0]})
    if st.reference is not None:  # the KL term is on (an SFT stage has none)
        record["kl/beta"] = float(st.kl.value)
    record.update(_length_metrics(batch))
    return record


def _update(st: StageState, loss: torch.Tensor, lmet: dict[str, float]) -> dict[str, float]:
    """Optimizer step, or a skipped update (warning) when the loss or the gradient norm is not finite."""
    if not torch.isfinite(loss):
        return _skip(st, f"non-finite loss ({loss.item()})")
    model = st.bundle.model
    all_reduce_grads(model, st.accelerator)
    params = [p for p in model.parameters() if p.requires_grad]
    clip = st.cfg.optim.grad_clip
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip is not None else float("inf"))
    if not torch.isfinite(norm):  # a finite loss can still overflow in backward: same treatment
        return _skip(st, f"non-finite gradient norm ({float(norm)})")
    st.bad_in_row = 0
    st.optimizer.step()
    st.scheduler.step()
    st.opt_steps += 1
    observed = lmet.get("kl/mean", 0.0)
    st.kl.update(observed, st.opt_steps)
    return {"train/grad_norm": float(norm), "train/skipped": 0.0, "loss/total": float(loss)}


def _skip(st: StageState, what: str) -> dict[str, float]:
    """Drop this update (weights, optimizer and schedule untouched); stop after max_bad_steps in a row."""
    st.bad_in_row += 1
    st.optimizer.zero_grad(set_to_none=True)
    warnings.warn(f"{what} at optimizer step {st.opt_steps}; update skipped ({st.bad_in_row} in a row)",
                  RuntimeWarning, stacklevel=3)
    if st.bad_in_row >= st.cfg.run.max_bad_steps:
        raise DuotuneError(
            f"{st.bad_in_row} non-finite losses or gradients in a row (run.max_bad_steps="
            f"{st.cfg.run.max_bad_steps}); stopping. Lower optim.lr, enable optim.grad_clip, or check "
            "the rewards and data for NaN/inf values")
    return {"train/skipped": 1.0, "loss/total": float("nan")}


def _length_metrics(batch: Any) -> dict[str, float]:
    on = ~batch.is_demo
    lens = batch.response_mask.sum(-1)
    out: dict[str, float] = {}
    if bool(on.any()):
        on_lens = lens[on]
        out.update({"completion/len_mean": float(on_lens.mean()), "completion/len_max": float(on_lens.max()),
                    "completion/clipped_ratio": float(batch.truncated[on].float().mean())})
    if bool(batch.is_demo.any()):
        out["completion/demo_len_mean"] = float(lens[batch.is_demo].mean())
    return out


def _to(batch: Any, device: torch.device) -> Any:
    if batch.input_ids.device == device:
        return batch
    for name in ("input_ids", "attention_mask", "loss_mask", "resp_pos", "response_mask", "demo_mask",
                 "is_demo", "group_ids", "truncated"):
        setattr(batch, name, getattr(batch, name).to(device))
    if batch.prompt_index is not None:
        batch.prompt_index = batch.prompt_index.to(device)
    batch.token_fields = {k: v.to(device) for k, v in batch.token_fields.items()}
    return batch

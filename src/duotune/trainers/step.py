"""One training step, top to bottom: sample the groups, score them, compute advantages, the
reference and old log-probs the method needs, then `num_iterations` passes of `ppo_mini_batches`
updates with the method's loss, then the method's post-update hook (ReLIFT) and the KL controller;
returns one metrics record (SPEC 6).

Data flow as in DESIGN.md "How data flows in one RL step"; the method supplies its settings, its
needs and its loss. Imports torch, rollout, `trainers.scoring` and `trainers.compute`.
"""

from __future__ import annotations

import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch

from duotune import algos
from duotune.errors import DuotuneError
from duotune.rollout import CollatedBatch, Rollout, SamplingParams, build_groups, collate, sync_weights
from duotune.trainers import guard
from duotune.trainers.compute import TeacherScores, backward_full_batch, batch_logprobs, teacher_scores
from duotune.trainers.methods import LossInputs, Method, Needs
from duotune.trainers.optim import prompt_indices
from duotune.trainers.rollout_log import rollout_rows
from duotune.trainers.sampling import Scored, dynamic_sample
from duotune.trainers.scoring import advantages, score_rollout

EXPERT_SEED = 7_777_777  # offsets run.seed for the expert batch's own stream over the training rows


@dataclass
class StageState:
    """Everything a stage's steps share (built once per stage by `loop._run_stage`)."""

    cfg: Any
    method: Method
    needs: Needs
    bundle: Any
    encoder: Any
    sampler: Any
    reference: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    kl: Any                 # the KL controller, None when the method has no active KL term
    examples: list[Any]
    accelerator: Any
    logger: Any
    total_updates: int      # optimizer updates of the stage (mixing schedules' denominator)
    bad_in_row: int = 0
    opt_steps: int = 0
    teacher: Any = None     # the frozen teacher model when the method distils (needs.teacher)
    post_update: Any = None  # the method's PostUpdate hook (`MethodSettings.post_update_hook`), or None
    parallel: Any = None     # trainers.distributed.Parallel: the prepared policy (forwards, backward, clip)
    step_start: int = 0      # opt_steps when the current step began (no update of it applied yet)


def train_step(st: StageState, step: int) -> dict[str, Any]:
    """Sample, score and update; the returned record holds every metric of this step."""
    cfg, settings, needs, par = st.cfg, st.cfg.algo, st.needs, st.parallel
    st.step_start = st.opt_steps
    model = par.model  # forwards go through the DDP/FSDP/DeepSpeed wrapper
    t0 = time.perf_counter()
    scored, record = _sample(st, step)
    rollout, batch = scored.rollout, collate(scored.rollout, st.encoder)
    batch.rewards, batch.correct = scored.rewards, scored.correct
    t_roll = time.perf_counter() - t0
    batch.advantages, amet = advantages(settings.group_stats(), rollout, batch.rewards, batch.correct)
    record.update(amet)
    st.logger.add_rollouts(rollout_rows(rollout, batch.rewards, batch.advantages))  # -> rollouts/step-NNNNNN.jsonl
    batch = batch.to(next(model.parameters()).device)
    record.update(_length_metrics(batch))
    if cfg.rollout.drop_truncated:  # DAPO overlong filtering: truncated samples leave the loss
        batch.response_mask[batch.truncated & ~batch.is_demo] = 0
    budget, temp = cfg.compute.token_budget, needs.temperature
    # Sharded ranks must run the same forwards; a shared prompt costs one more forward on some ranks.
    share = cfg.compute.share_prompts and not par.sharded
    # Log-probs at the rollout temperature (TRL, verl): the policy that sampled is softmax(logits / T).
    ref_logp = (batch_logprobs(st.reference, st.encoder, batch, budget, with_entropy=False,
                               temperature=temp, share_prompts=share, parallel=par)[0] if needs.reference else None)
    # The sampling policy's log-probs, only when a ratio can differ from 1 (a later update on samples
    # an earlier update of this step already moved the policy for).
    old_logp = (batch_logprobs(model, st.encoder, batch, budget, with_entropy=False, temperature=temp,
                               share_prompts=share, parallel=par)[0] if needs.old_logp else None)
    # Distillation: the frozen teacher's log-probs (and top-k) on the student's own rollouts.
    teacher = (teacher_scores(st.teacher, st.encoder, batch, budget, settings.teacher_spec(), share)
               if needs.teacher else None)
    beta = float(st.kl.value) if st.kl is not None else 0.0  # one beta per rollout batch
    t1 = time.perf_counter()
    updates: dict[str, list[float]] = defaultdict(list)
    observed_kl: list[float] = []
    for _ in range(cfg.num_iterations):
        for rows in mini_batches(batch, settings.mini_batches()):
            metrics, kl = _update(st, batch.select(rows), _rows(old_logp, rows), _rows(ref_logp, rows), beta,
                                  None if teacher is None else teacher.select(rows))
            for k, v in metrics.items():
                updates[k].append(v)
            if kl is not None:
                observed_kl.append(kl)
    record.update({k: sum(v) / len(v) for k, v in updates.items()})
    t_train = time.perf_counter() - t1
    if st.post_update is not None:  # e.g. ReLIFT's SFT update on its buffer of failed questions
        record.update(st.post_update(st, step, rollout, batch))
    if st.kl is not None:  # once per rollout step, with the KL the loss observed and its sample count
        n = int((~batch.is_demo).sum()) * st.accelerator.num_processes
        st.kl.update(sum(observed_kl) / max(1, len(observed_kl)), step + 1, n_samples=n)
    if st.reference is not None:
        record["kl/beta"] = beta  # the beta the loss used
    n_tokens = float(batch.attention_mask.sum())
    record.update({"time/rollout": t_roll, "time/train": t_train,
                   "perf/tokens_per_s": n_tokens * cfg.num_iterations / max(t_train, 1e-9),
                   "train/lr": st.scheduler.get_last_lr()[0], "train/updates": float(len(updates["loss/total"]))})
    return record


def _sample(st: StageState, step: int) -> tuple[Scored, dict[str, Any]]:
    """The step's rollout, scored once; with `rollout.dynamic_sampling`, DAPO's extra rounds until
    prompts_per_step groups have unequal rewards (`trainers.sampling`)."""
    cfg = st.cfg

    def draw(round_: int) -> Scored:
        rollout = _rollout(st, step, round_)
        if not st.method.uses_reward:
            n = len(rollout.texts)
            return Scored(rollout, torch.zeros(n), torch.zeros(n, dtype=torch.bool), {})
        return Scored(rollout, *score_rollout(rollout, cfg.reward))

    extra: dict[str, Any] = {}
    if cfg.rollout.dynamic_sampling:
        if not (st.method.demo_entry.on_policy and st.method.uses_reward):
            raise DuotuneError(f"rollout.dynamic_sampling drops rollout groups with equal rewards; method "
                               f"{cfg.method!r} samples none: set rollout.dynamic_sampling=false")
        scored, extra = dynamic_sample(draw, cfg.prompts_per_step, cfg.rollout.max_extra_rounds)
    else:
        scored = draw(0)
    record = {"n_prompts": float(len(scored.rollout.examples) - scored.rollout.n_expert), **scored.metrics, **extra}
    if st.accelerator.num_processes > 1:  # the dataset rows each rank trained on (ranks must split the data)
        from accelerate.utils import gather_object

        own = scored.rollout.examples[:len(scored.rollout.examples) - scored.rollout.n_expert]
        record["data/rows_by_rank"] = gather_object([[st.examples.index(ex) for ex in own]])
    if st.method.demo_entry.prefix:
        lens = [p for p, d in zip(scored.rollout.prefix_lens, scored.rollout.is_demo) if not d]
        record.update({"prefix/rows_frac": sum(p > 0 for p in lens) / max(1, len(lens)),
                       "prefix/len_mean": sum(lens) / max(1, sum(p > 0 for p in lens))})
    return scored, record


def _rollout(st: StageState, step: int, round_: int = 0) -> Rollout:
    """The step's prompts (a pure function of seed, step, rank and the dynamic-sampling round), sampled."""
    cfg, acc = st.cfg, st.accelerator
    # Extra rounds read their own seeded streams of prompts (the data position stays the step).
    idx = prompt_indices(len(st.examples), cfg.prompts_per_step, step, acc.process_index,
                         acc.num_processes, cfg.run.seed + 104_729 * round_, cfg.data.shuffle or round_ > 0)
    examples = [st.examples[i] for i in idx]
    entry = st.method.demo_entry
    # a pure function of (seed, step, rank, round): resuming resamples identically
    seed = cfg.run.seed * 7919 + step * 104729 + acc.process_index + 15_485_863 * round_
    params = SamplingParams(n=1, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                            top_k=cfg.rollout.top_k, max_new_tokens=cfg.rollout.max_completion_length,
                            seed=seed)
    prefix = (cfg.algo.prefix_plan(examples, st.encoder, cfg.rollout.group_size, step / cfg.steps, seed)
              if entry.prefix else None)
    group_size = cfg.rollout.group_size if entry.on_policy else 0
    n_expert = cfg.algo.expert_rows(len(examples) * group_size) if entry.expert_rows and round_ == 0 else 0
    # The expert batch is its own seeded, always shuffled stream over the training rows (resumes like
    # the prompts; unshuffled it would read the step's own prompts at step 0). Drawn in round 0 only.
    experts = [st.examples[i] for i in prompt_indices(len(st.examples), n_expert, step, acc.process_index,
                                                      acc.num_processes, cfg.run.seed + EXPERT_SEED,
                                                      True)] if n_expert else []
    return build_groups(st.sampler, st.encoder, examples, params, group_size=group_size,
                        demo_in_group=entry.demo_in_group, demo_rows=entry.demo_rows,
                        max_completion_length=cfg.rollout.max_completion_length, expert_demos=experts,
                        prefix=prefix)


def mini_batches(batch: CollatedBatch, k: int) -> list[torch.Tensor]:
    """Row indices of k disjoint mini-batches of whole prompts (a prompt's group and its demo rows
    stay together), in prompt order, as verl's PPO mini-batches split the rollout batch. Prompts
    with no group row (an expert batch) are dealt evenly across the mini-batches."""
    prompts = torch.unique(batch.prompt_index)
    grouped = torch.unique(batch.prompt_index[batch.group_ids >= 0])
    if len(grouped) == 0:
        grouped = prompts
    if k > len(grouped):
        raise DuotuneError(f"algo.ppo_mini_batches={k} is more than the {len(grouped)} prompts of a step; "
                           f"lower it or raise prompts_per_step")
    chunks = list(grouped.chunk(k))
    others = prompts[~torch.isin(prompts, grouped)]
    chunks = [torch.cat([c, o]) for c, o in zip(chunks, others.tensor_split(len(chunks)))]
    return [torch.isin(batch.prompt_index, chunk).nonzero().flatten() for chunk in chunks]


def _rows(x: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    return None if x is None else x[rows.to(x.device)]


def _update(st: StageState, rows: CollatedBatch, old_logp: torch.Tensor | None, ref_logp: torch.Tensor | None,
            beta: float, teacher: TeacherScores | None = None) -> tuple[dict[str, float], float | None]:
    """One optimizer update on `rows` with the method's loss; returns its metrics and observed KL.
    With the teacher's top-k ids the loss gets logp [N, T, 1 + k] (column 0: the sampled token)."""
    cfg, settings = st.cfg, st.cfg.algo
    inputs = LossInputs(settings=settings, batch=rows, mask=rows.response_mask, rewards=rows.rewards,
                        correct=rows.correct, advantages=rows.advantages, old_logp=old_logp,
                        ref_logp=ref_logp, beta=beta, progress=min(1.0, st.opt_steps / st.total_updates),
                        l_max=cfg.rollout.max_completion_length, teacher=teacher)
    outs = []

    def loss_fn(logp: torch.Tensor, ent: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        outs.append(st.method.loss(inputs, logp, ent))
        return outs[-1].loss, outs[-1].metrics

    st.optimizer.zero_grad(set_to_none=True)
    entropy_grad = st.method.entropy_grad or bool(getattr(settings, "entropy_coef", 0.0))
    par = st.parallel
    loss, lmet, logp, _ = backward_full_batch(par.model, st.encoder, rows, loss_fn, cfg.compute.token_budget,
                                              with_entropy=True, entropy_grad=entropy_grad,
                                              share_prompts=cfg.compute.share_prompts and not par.sharded,
                                              temperature=st.needs.temperature, parallel=par,
                                              extra_ids=None if teacher is None else teacher.topk_ids)
    # The sampler/trainer mismatch, where the trainer's log-probs of the sampling policy are at hand.
    sampling = old_logp if old_logp is not None else (logp if st.opt_steps == st.step_start else None)
    mismatch = _mismatch(rows, sampling) if sampling is not None else {}
    return {**lmet, **mismatch, **_optimizer_step(st, loss)}, outs[-1].kl


def _mismatch(rows: CollatedBatch, train_logp: torch.Tensor) -> dict[str, float]:
    """`rollout/logp_diff_mean` / `_max`: the sampler's log-probs of its sampled tokens against the
    trainer's of the sampling policy, over the rows' own sampled tokens (not demo or prefix tokens)."""
    if rows.rollout_logp is None:
        return {}
    lp = train_logp[..., 0] if train_logp.dim() == 3 else train_logp  # distillation: column 0 = sampled
    own = rows.response_mask * (1 - rows.demo_mask)
    return {f"rollout/{k}": v for k, v in algos.logp_mismatch(lp, rows.rollout_logp, own).items()}


def _optimizer_step(st: StageState, loss: torch.Tensor) -> dict[str, float]:
    """Optimizer step, or a skipped update (warning) when the loss or the gradient norm is not finite."""
    if not torch.isfinite(loss):
        return _skip(st, f"non-finite loss ({loss.item()})")
    if (why := guard.loss_problem(float(loss), st.cfg.run.max_loss)) is not None:
        return _skip(st, why)
    params = [p for p in st.parallel.model.parameters() if p.requires_grad]
    norm = st.parallel.clip_grad_norm(st.cfg.optim.grad_clip)  # on the rank-averaged gradients
    if not torch.isfinite(norm):  # a finite loss can still overflow in backward: same treatment
        return _skip(st, f"non-finite gradient norm ({float(norm)})")
    # The rollback guard copies whole tensors: single-process and DDP runs (sharded ranks hold pieces).
    guarded = not st.parallel.sharded
    snap = guard.before_update(params, st.optimizer, st.scheduler, st.cfg.run.rollback) if guarded else None
    st.optimizer.step()
    st.scheduler.step()
    # Free the gradients now, not at the next update (as HF Trainer/accelerate do): a policy-sized
    # buffer would otherwise live through the rollouts, the scoring and any evaluation in between.
    st.optimizer.zero_grad(set_to_none=True)
    if snap is not None and (why := guard.after_update(snap, params, st.optimizer, st.scheduler, st.cfg.run,
                                                         st.accelerator)):
        return _skip(st, why, rolled_back=True)
    # The engine samples the next rollout from the kept weights (the unwrapped module's).
    synced = sync_weights(st.sampler, st.bundle.model)
    st.bad_in_row = 0
    st.opt_steps += 1
    return {"train/grad_norm": float(norm), "train/skipped": 0.0, "loss/total": float(loss), **synced}


def _skip(st: StageState, what: str, rolled_back: bool = False) -> dict[str, float]:
    """Drop this update (weights, optimizer and schedule untouched or restored); stop after
    max_bad_steps in a row."""
    st.bad_in_row += 1
    st.optimizer.zero_grad(set_to_none=True)
    done = "rolled back" if rolled_back else "skipped"
    warnings.warn(f"{what} at optimizer step {st.opt_steps}; update {done} ({st.bad_in_row} in a row)",
                  RuntimeWarning, stacklevel=3)
    if st.bad_in_row >= st.cfg.run.max_bad_steps:
        raise DuotuneError(
            f"{st.bad_in_row} non-finite or exploding updates in a row (run.max_bad_steps="
            f"{st.cfg.run.max_bad_steps}; last: {what}); stopping. Lower optim.lr, enable optim.grad_clip, "
            "or check the rewards and data for NaN/inf values")
    return {"train/skipped": 1.0, "train/rolled_back": float(rolled_back), "loss/total": float("nan")}


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

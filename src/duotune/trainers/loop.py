"""The one training loop: stages (a pipeline) of steps; each step is rollout -> reward -> advantage ->
loss (the method's step function) -> update -> KL controller -> metrics; checkpoints and resume.

Orchestration only: the maths is in `duotune.algos` (through `trainers.methods`), sampling in
`duotune.rollout`, rewards in `duotune.rewards`. Never branches on method names.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from duotune.config import save_config
from duotune.data import load_examples
from duotune.errors import ConfigError, DuotuneError
from duotune.memory import release_host_memory, rss_gb
from duotune.models import load_model, save_model
from duotune.models.lora import apply_lora, is_peft, load_trainable_state, param_groups
from duotune.paths import folder_size, human_size
from duotune.progress import library_progress
from duotune.rollout import PromptEncoder, build_sampler, close_sampler
from duotune.trainers import checkpoint as ckpt
from duotune.trainers import run_folder
from duotune.trainers.config import TrainConfig, stage_configs
from duotune.trainers.distributed import build_accelerator, describe, parallel_kind, plain_loading, prepare
from duotune.trainers.methods import METHODS
from duotune.trainers.metrics import MetricsLogger, accelerator_kwargs, plot_curves, start_trackers
from duotune.trainers.optim import build_optimizer, resolve_dtype
from duotune.trainers.step import StageState, train_step
from duotune.trainers.teacher import load_teacher


@dataclass
class RunResult:
    """What a run leaves behind: its folder, the final global step and the last metrics record."""

    run_dir: Path
    global_step: int
    last_metrics: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None
    bundle: Any = None  # the trained ModelBundle (final weights, still in memory)
    steps_run: int = 0  # steps this call ran, and the optimizer updates they applied
    updates: int = 0


def _run_dir(cfg: TrainConfig) -> Path:
    name = cfg.run.name or f"{cfg.method}-{Path(cfg.model).name}-{datetime.now():%Y%m%d-%H%M%S}"
    return Path(cfg.run.output_dir) / name


def train(cfg: TrainConfig) -> RunResult:
    """Run every stage of `cfg` (one stage unless `stages` is set) and return the run folder."""
    run_dir = _run_dir(cfg)
    # DDP / FSDP2 / DeepSpeed as `accelerate launch` configured it; trackers from run.log_with
    accelerator = build_accelerator(**accelerator_kwargs(cfg.run.log_with, run_dir))
    torch.manual_seed(cfg.run.seed + accelerator.process_index)
    stages = stage_configs(cfg)
    say = print if accelerator.is_main_process else _quiet
    total = sum(s.steps for s in stages)
    _preflight(stages)  # before the run folder is touched: a typo never costs the old run
    resume = _open_run(cfg, run_dir, total, accelerator, say)
    state = _resume_state(resume, total)
    global_step = int(state["global_step"]) if state else 0
    if resume is not None and global_step < total:
        say(f"resuming from {resume.name} (step {global_step})")
    if accelerator.is_main_process:
        start_trackers(accelerator, cfg.run.project, run_dir.name, cfg.model_dump(mode="json"))
    logger = MetricsLogger(run_dir, total, global_step, progress=cfg.run.progress,
                           is_main=accelerator.is_main_process, desc=f"train {run_dir.name}",
                           accelerator=accelerator, rollouts_every=cfg.run.rollouts_every)
    result = RunResult(run_dir, global_step, checkpoint=resume)
    bundle = None
    with library_progress(cfg.run.progress):
        try:
            begin = 0
            for k, scfg in enumerate(stages):
                end = begin + scfg.steps
                if global_step < end:
                    bundle = _stage_bundle(scfg, k, bundle, run_dir, resume, accelerator, result.checkpoint)
                    result = _run_stage(scfg, k, begin, bundle, accelerator, run_dir, logger,
                                        state if resume and global_step > begin else None, result)
                    global_step = result.global_step
                    if cfg.run.stop_after is not None and global_step >= cfg.run.stop_after:
                        break
                    resume = None
                begin = end
        finally:
            logger.close()
    result.bundle = bundle
    if accelerator.is_main_process:
        _finish(cfg, run_dir, result.global_step >= total, logger)
    if result.steps_run and not result.updates:
        raise DuotuneError(f"no update was applied in {result.steps_run} steps: each was skipped or rolled "
                           "back (see the warnings); lower optim.lr, or check the rewards and data")
    if not result.steps_run and global_step >= total:
        say(f"{run_dir} has finished all {total} steps; nothing to train (raise steps to continue)")
    return result


def _resume_state(resume: Path | None, total: int) -> dict[str, Any] | None:
    """The checkpoint's trainer state; a finished run whose state was pruned resumes as done (its step
    only); an unfinished one without state cannot continue."""
    if resume is None:
        return None
    if not ckpt.is_pruned(resume):
        return ckpt.load_trainer_state(resume)
    step = ckpt.checkpoint_step(resume)
    if step < total:
        raise DuotuneError(f"cannot resume from {resume}: its training state was deleted when its run "
                           f"finished at step {step}, and this config asks for {total}; start a new run folder "
                           "(run.name=...) or run.resume=never, and set run.keep_optimizer_state=true to "
                           "keep the state of finished runs")
    return {"global_step": step}


def _finish(cfg: TrainConfig, run_dir: Path, finished: bool, logger: MetricsLogger) -> None:
    """curves.png; a finished run drops what only a resume needs; the folder's size on the console."""
    if cfg.run.plots:
        plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
    if finished and not cfg.run.keep_optimizer_state:
        ckpt.prune_finished(run_dir)
    logger.write(f"run folder {run_dir}: {human_size(folder_size(run_dir))}")


def _quiet(message: str) -> None:
    """`say` on processes other than the main one."""


def _open_run(cfg: TrainConfig, run_dir: Path, total: int, accelerator: Any, say: Any) -> Path | None:
    """Bind the run folder to `cfg` and return the checkpoint to resume (see `run_folder`): resume=never
    clears the folder first; a checkpoint trained under another config is refused before anything is
    written; another run's checkpoint brings that run's stage-start weights along."""
    main = accelerator.is_main_process
    if cfg.run.resume == "never" and main:
        run_folder.start_clean(run_dir, say)
    accelerator.wait_for_everyone()
    resume = ckpt.find_resume(run_dir, cfg.run.resume, say)
    if resume is not None:
        run_folder.check_binding(resume, cfg.model_dump(mode="json"), run_dir)
        if ckpt.checkpoint_step(resume) > total:
            raise ConfigError(f"{resume} is at step {ckpt.checkpoint_step(resume)}, past this config's "
                              f"{total} steps; raise steps, or start over with run.resume=never")
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        ckpt.tidy(run_dir, resume if resume is not None and resume.parent == run_dir else None,
                  cfg.run.keep_last)
        if resume is not None:
            run_folder.adopt_stage_inits(resume, run_dir)
    accelerator.wait_for_everyone()
    return resume


def _preflight(stages: list[TrainConfig]) -> None:
    """Fail before the first step rather than after it: user reward modules are imported here (this is
    where a config's own code runs) and the in-training benchmark is read."""
    from duotune.trainers.scoring import reward_manager

    for scfg in stages:
        if METHODS.get(scfg.method).uses_reward:  # the cached manager score_rollout then uses
            reward_manager(scfg.reward)
        if scfg.eval.every:
            from duotune.eval import load_benchmark

            load_benchmark(scfg.eval.benchmark, limit=scfg.eval.limit)


def _stage_bundle(cfg: TrainConfig, k: int, prev: Any, run_dir: Path, resume: Path | None,
                  accelerator: Any, prev_checkpoint: Path | None) -> Any:
    """Stage weights: the resume checkpoint, else the previous stage's final model, else cfg.model.

    A sharded run (FSDP2, DeepSpeed) starts each stage from plain weights: the previous stage's
    consolidated final checkpoint, since its model lives in pieces on the ranks.
    With `lora.enabled` the stage is that model (saved as stage-<k>-init, adapters of an earlier
    stage merged in) plus fresh adapters; a resume reloads stage-<k>-init and the checkpoint's
    unmerged trained tensors, so it continues the very same adapters."""
    sharded = parallel_kind(accelerator) in ("fsdp2", "deepspeed")
    if cfg.lora.enabled and sharded:
        raise DuotuneError("lora.enabled with a sharded accelerate config (FSDP2/DeepSpeed) is not supported: "
                           "the adapters are small, train them data-parallel (configs/accelerate/ddp_gpu.yaml "
                           "or multi_cpu.yaml)")

    def load(source: str) -> Any:
        with plain_loading(accelerator):
            return load_model(source, dtype=resolve_dtype(cfg.compute.dtype, accelerator.device),
                              device=accelerator.device, freeze_vision_tower=cfg.compute.freeze_vision_tower)

    init = run_dir / f"stage-{k}-init"
    if resume is not None:
        if cfg.lora.enabled and not (init / "config.json").is_file():
            raise DuotuneError(f"cannot resume the LoRA run from {resume}: its stage start {init} is missing")
        bundle = load(str(init) if cfg.lora.enabled else str(resume / "model"))
    elif prev is not None and sharded:
        bundle = load(str(prev_checkpoint / "model"))
    elif prev is not None:
        if not cfg.lora.enabled and not is_peft(prev.model):
            return prev
        bundle = prev
        if is_peft(bundle.model):  # the next stage starts from the merged weights
            bundle.model = bundle.model.merge_and_unload()
    else:
        bundle = load(cfg.model)
    if cfg.lora.enabled:
        lo = cfg.lora
        if resume is None and accelerator.is_main_process:
            save_model(bundle, init)
        bundle.model = apply_lora(bundle.model, r=lo.r, alpha=lo.alpha, dropout=lo.dropout,
                                  targets=lo.target_modules, full_modules=lo.full_modules)
        if resume is not None:
            load_trainable_state(bundle.model, resume / ckpt.TRAINABLE)
    bundle.model.train()  # `prepare` gives every rank rank 0's weights (DDP) or shards them (FSDP2, ZeRO)
    return bundle


def _reference(cfg: TrainConfig, needs: Any, k: int, bundle: Any, run_dir: Path, resumed: bool,
               accelerator: Any) -> Any:
    """A frozen copy of the stage's initial policy when the method needs one (an active KL term),
    else None (SPEC 1: beta = 0 loads no reference model)."""
    if not needs.reference:
        return None
    if resumed:  # the stage-start weights, saved when the stage began
        with plain_loading(accelerator):
            ref = load_model(str(run_dir / f"stage-{k}-init"), device=accelerator.device,
                             dtype=resolve_dtype(cfg.compute.dtype, accelerator.device)).model
    else:
        ref = copy.deepcopy(bundle.model)
        if accelerator.is_main_process and not cfg.lora.enabled:  # LoRA stages saved it already
            save_model(bundle, run_dir / f"stage-{k}-init")
    return ref.eval().requires_grad_(False)


def _run_stage(cfg: TrainConfig, k: int, begin: int, bundle: Any, accelerator: Any, run_dir: Path,
               logger: MetricsLogger, state: dict[str, Any] | None, result: RunResult) -> RunResult:
    examples = load_examples(cfg.data.train, format=cfg.data.format, limit=cfg.data.limit,
                             prompt_style=cfg.data.prompt_style, system_prompt=cfg.data.system_prompt)
    if not examples:
        raise DuotuneError(f"data.train {cfg.data.train!r} has no rows")
    method = METHODS.get(cfg.method)
    needs = method.needs(cfg.algo, cfg.num_iterations, cfg.rollout.temperature)
    total_opt = cfg.steps * cfg.num_iterations * cfg.algo.mini_batches()
    groups = (param_groups(bundle.model, cfg.optim.lr, cfg.lora.full_lr, cfg.lora.full_modules)
              if cfg.lora.enabled else None)
    optimizer, scheduler = build_optimizer(bundle.model, cfg.optim, total_opt, groups)
    kl_term = cfg.algo.kl_term()
    # GRPO-D's schedule spans the stage's rollout steps: beta is constant within a rollout batch.
    kl = kl_term.build(cfg.steps) if needs.reference else None
    reference = _reference(cfg, needs, k, bundle, run_dir, state is not None, accelerator)  # a plain copy
    # The policy (a VLM may leave its tower unused in a forward) and its optimizer through accelerate;
    # the reference and the sampler use the unwrapped model (`bundle.model` stays that object).
    par, optimizer = prepare(accelerator, bundle.model, optimizer, grad_clip=cfg.optim.grad_clip,
                             find_unused=bundle.is_vlm)
    sampler, engine_line = (build_sampler(bundle, cfg.rollout, seed=cfg.run.seed, sharded=par.sharded)
                            if needs.rollouts else (None, f"rollout engine: none ({cfg.method} samples nothing)"))
    # The run's first line names its layout and engine; later stages name their engine.
    logger.write(f"duotune: {describe(accelerator)}; {engine_line}" if k == 0 or state is not None else engine_line)
    st = StageState(cfg=cfg, method=method, needs=needs, bundle=bundle, encoder=PromptEncoder(bundle),
                    sampler=sampler, reference=reference, optimizer=optimizer, scheduler=scheduler, kl=kl,
                    examples=examples, accelerator=accelerator, logger=logger, total_updates=total_opt,
                    parallel=par,
                    teacher=load_teacher(cfg.algo.teacher_spec(), bundle, cfg.model, resolve_dtype(
                        cfg.compute.dtype, accelerator.device), accelerator.device) if needs.teacher else None)
    st.post_update = cfg.algo.post_update_hook(st)
    step = 0
    if state is not None:
        ckpt.set_rng_state(state["rng"])
        if par.sharded:  # model and optimizer shards (and each rank's own RNG) from accelerate's state
            par.load_state(result.checkpoint / ckpt.SHARDED)
        elif "optimizer" not in state:
            raise DuotuneError(f"{result.checkpoint} was written by a sharded run (FSDP2/DeepSpeed): resume it "
                               "with the accelerate config it was trained with")
        else:
            optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if kl is not None and state.get("kl"):
            kl.load_state_dict(state["kl"])
        st.bad_in_row = int(state["bad_in_row"])
        if st.post_update is not None and state.get("method_state"):
            st.post_update.load_state_dict(state["method_state"])
        step = int(state["global_step"]) - begin
        # KL schedules and mixing schedules read the optimizer-step count (older checkpoints lack it)
        st.opt_steps = int(state.get("opt_steps", step * cfg.num_iterations * cfg.algo.mini_batches()))
    opt_start = st.opt_steps
    while step < cfg.steps:
        t0 = time.perf_counter()
        record = train_step(st, step)
        record.update(step=begin + step + 1, stage=k, stage_step=step + 1, method=cfg.method,
                      **{"time/step": time.perf_counter() - t0})
        release_host_memory()  # the step's freed buffers back to the OS (duotune.memory)
        if (rss := rss_gb()) is not None:
            record["perf/host_rss_gb"] = rss
        step += 1
        result.global_step, result.last_metrics = begin + step, record
        result.steps_run += 1
        logger.log(record)
        _maybe_eval(st, result.global_step, record)
        done = step == cfg.steps or result.global_step == cfg.run.stop_after
        if done or (cfg.run.save_every and result.global_step % cfg.run.save_every == 0):
            result.checkpoint = _save(st, run_dir, result.global_step)
        if cfg.run.stop_after is not None and result.global_step >= cfg.run.stop_after:
            break
    result.updates += st.opt_steps - opt_start
    close_sampler(sampler)
    return result


def _save(st: StageState, run_dir: Path, global_step: int) -> Path:
    """checkpoint-<step> (every rank calls it). Sharded runs: every rank writes its model and optimizer
    shards through `accelerator.save_state`, and the main rank the consolidated model for export."""
    acc, par = st.accelerator, st.parallel
    acc.wait_for_everyone()
    state = {"global_step": global_step, "scheduler": st.scheduler.state_dict(),
             "kl": st.kl.state_dict() if st.kl is not None else {}, "bad_in_row": st.bad_in_row,
             "opt_steps": st.opt_steps,
             "method_state": st.post_update.state_dict() if st.post_update is not None else {}}
    if par.sharded:
        if acc.is_main_process:
            ckpt.staging_dir(run_dir, global_step, fresh=True)
        acc.wait_for_everyone()
        par.save_state(ckpt.staging_dir(run_dir, global_step) / ckpt.SHARDED)
    else:
        state["optimizer"] = st.optimizer.state_dict()
    weights = par.full_state_dict()  # collective; None unless sharded
    if acc.is_main_process:
        ckpt.save_checkpoint(run_dir, global_step, st.bundle, state, st.cfg.run.keep_last,
                             state_dict=weights, staged=par.sharded)
    acc.wait_for_everyone()
    return ckpt.checkpoint_dir(run_dir, global_step)


def _maybe_eval(st: StageState, global_step: int, record: dict[str, Any]) -> None:
    """`eval/<benchmark>/accuracy` every `eval.every` steps through `duotune.eval.run_eval_slice`."""
    ev = st.cfg.eval
    # Sharded weights are gathered inside every forward, so all ranks evaluate (only rank 0 logs).
    if not ev.every or global_step % ev.every or not (st.accelerator.is_main_process or st.parallel.sharded):
        return
    from duotune.eval import run_eval_slice

    out = run_eval_slice(st.bundle, ev.benchmark, limit=ev.limit, max_new_tokens=ev.max_new_tokens)
    rec = {"step": global_step, **{f"eval/{ev.benchmark}/{k}": v for k, v in out.items()
                                   if isinstance(v, (int, float))}}
    st.logger.log({**rec, "kind": "eval"})
    record.update(rec)

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
from duotune.errors import DuotuneError
from duotune.models import load_model, save_model
from duotune.models.lora import apply_lora, is_peft, load_trainable_state, param_groups
from duotune.paths import folder_size, human_size
from duotune.progress import library_progress
from duotune.rollout import HFSampler, PromptEncoder
from duotune.trainers import checkpoint as ckpt
from duotune.trainers.config import TrainConfig, stage_configs
from duotune.trainers.metrics import MetricsLogger, accelerator_kwargs, plot_curves, start_trackers
from duotune.trainers.optim import broadcast_params, build_optimizer, resolve_dtype
from duotune.trainers.step import StageState, train_step


@dataclass
class RunResult:
    """What a run leaves behind: its folder, the final global step and the last metrics record."""

    run_dir: Path
    global_step: int
    last_metrics: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None
    bundle: Any = None  # the trained ModelBundle (final weights, still in memory)


def _run_dir(cfg: TrainConfig) -> Path:
    name = cfg.run.name or f"{cfg.method}-{Path(cfg.model).name}-{datetime.now():%Y%m%d-%H%M%S}"
    return Path(cfg.run.output_dir) / name


def train(cfg: TrainConfig) -> RunResult:
    """Run every stage of `cfg` (one stage unless `stages` is set) and return the run folder."""
    from accelerate import Accelerator

    run_dir = _run_dir(cfg)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), **accelerator_kwargs(cfg.run.log_with, run_dir))
    torch.manual_seed(cfg.run.seed + accelerator.process_index)
    stages = stage_configs(cfg)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    accelerator.wait_for_everyone()
    total = sum(s.steps for s in stages)
    resume = ckpt.find_resume(run_dir, cfg.run.resume)
    state = _resume_state(resume, total)
    global_step = int(state["global_step"]) if state else 0
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
                    bundle = _stage_bundle(scfg, k, bundle, run_dir, resume, accelerator)
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
    return result


def _resume_state(resume: Path | None, total: int) -> dict[str, Any] | None:
    """The checkpoint's trainer state; a finished run whose state was pruned resumes as done (its step
    only); an unfinished one without state cannot continue."""
    if resume is None:
        return None
    if (resume / "trainer_state.pt").is_file():
        return ckpt.load_trainer_state(resume)
    step = ckpt.checkpoint_step(resume)
    if step < total:
        raise DuotuneError(f"cannot resume from {resume}: it has no trainer_state.pt (deleted when a run "
                           f"finishes) and the run is at step {step} of {total}; start a new run folder "
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


def _stage_bundle(cfg: TrainConfig, k: int, prev: Any, run_dir: Path, resume: Path | None,
                  accelerator: Any) -> Any:
    """Stage weights: the resume checkpoint, else the previous stage's final model, else cfg.model.

    With `lora.enabled` the stage is that model (saved as stage-<k>-init, adapters of an earlier
    stage merged in) plus fresh adapters; a resume reloads stage-<k>-init and the checkpoint's
    unmerged trained tensors, so it continues the very same adapters."""
    def load(source: str) -> Any:
        return load_model(source, dtype=resolve_dtype(cfg.compute.dtype, accelerator.device),
                          device=accelerator.device, freeze_vision_tower=cfg.compute.freeze_vision_tower)

    init = run_dir / f"stage-{k}-init"
    if resume is not None:
        if cfg.lora.enabled and not (init / "config.json").is_file():
            raise DuotuneError(f"cannot resume the LoRA run from {resume}: its stage start {init} is missing")
        bundle = load(str(init) if cfg.lora.enabled else str(resume / "model"))
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
    bundle.model.train()
    broadcast_params(bundle.model, accelerator)
    return bundle


def _reference(cfg: TrainConfig, k: int, bundle: Any, run_dir: Path, resumed: bool, accelerator: Any) -> Any:
    """A frozen copy of the stage's initial policy when the KL term is active, else None (SPEC 1:
    beta = 0 loads no reference model)."""
    from duotune.trainers.methods import kl_active

    if not kl_active(cfg):
        return None
    if resumed:  # the stage-start weights, saved when the stage began
        ref = load_model(str(run_dir / f"stage-{k}-init"), device=accelerator.device,
                         dtype=resolve_dtype(cfg.compute.dtype, accelerator.device)).model
    else:
        ref = copy.deepcopy(bundle.model)
        if accelerator.is_main_process and not cfg.lora.enabled:  # LoRA stages saved it already
            save_model(bundle, run_dir / f"stage-{k}-init")
    return ref.eval().requires_grad_(False)


def _run_stage(cfg: TrainConfig, k: int, begin: int, bundle: Any, accelerator: Any, run_dir: Path,
               logger: MetricsLogger, state: dict[str, Any] | None, result: RunResult) -> RunResult:
    from duotune.trainers.methods import build_kl

    examples = load_examples(cfg.data.train, format=cfg.data.format, limit=cfg.data.limit,
                             prompt_style=cfg.data.prompt_style, system_prompt=cfg.data.system_prompt)
    if not examples:
        raise DuotuneError(f"data.train {cfg.data.train!r} has no rows")
    total_opt = cfg.steps * cfg.num_iterations
    groups = (param_groups(bundle.model, cfg.optim.lr, cfg.lora.full_lr, cfg.lora.full_modules)
              if cfg.lora.enabled else None)
    optimizer, scheduler = build_optimizer(bundle.model, cfg.optim, total_opt, groups)
    kl = build_kl(cfg, total_opt)
    st = StageState(cfg=cfg, bundle=bundle, encoder=PromptEncoder(bundle),
                    sampler=HFSampler(bundle, batch_size=cfg.rollout.batch_size,
                                      suppress_tokens=bundle.vision_token_ids or None),
                    reference=_reference(cfg, k, bundle, run_dir, state is not None, accelerator),
                    optimizer=optimizer, scheduler=scheduler, kl=kl, examples=examples,
                    accelerator=accelerator, logger=logger)
    step = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        vars(kl).update(copy.deepcopy(state["kl"]))  # controllers are plain objects (algos)
        st.bad_in_row = int(state["bad_in_row"])
        step = int(state["global_step"]) - begin
        ckpt.set_rng_state(state["rng"])
    while step < cfg.steps:
        t0 = time.perf_counter()
        record = train_step(st, step)
        record.update(step=begin + step + 1, stage=k, stage_step=step + 1, method=cfg.method,
                      **{"time/step": time.perf_counter() - t0})
        step += 1
        result.global_step, result.last_metrics = begin + step, record
        logger.log(record)
        _maybe_eval(st, result.global_step, record)
        done = step == cfg.steps or result.global_step == cfg.run.stop_after
        if done or (cfg.run.save_every and result.global_step % cfg.run.save_every == 0):
            result.checkpoint = _save(st, run_dir, result.global_step)
        if cfg.run.stop_after is not None and result.global_step >= cfg.run.stop_after:
            break
    return result


def _save(st: StageState, run_dir: Path, global_step: int) -> Path | None:
    st.accelerator.wait_for_everyone()
    path = None
    if st.accelerator.is_main_process:
        path = ckpt.save_checkpoint(run_dir, global_step, st.bundle, {
            "global_step": global_step, "optimizer": st.optimizer.state_dict(),
            "scheduler": st.scheduler.state_dict(), "kl": copy.deepcopy(vars(st.kl)),
            "bad_in_row": st.bad_in_row}, st.cfg.run.keep_last)
    st.accelerator.wait_for_everyone()
    return path


def _maybe_eval(st: StageState, global_step: int, record: dict[str, Any]) -> None:
    """`eval/<benchmark>/accuracy` every `eval.every` steps through `duotune.eval.run_eval_slice`."""
    ev = st.cfg.eval
    if not ev.every or global_step % ev.every or not st.accelerator.is_main_process:
        return
    from duotune.eval import run_eval_slice

    out = run_eval_slice(st.bundle, ev.benchmark, limit=ev.limit, max_new_tokens=ev.max_new_tokens)
    rec = {"step": global_step, **{f"eval/{ev.benchmark}/{k}": v for k, v in out.items()
                                   if isinstance(v, (int, float))}}
    st.logger.log({**rec, "kind": "eval"})
    record.update(rec)

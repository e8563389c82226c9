"""ReLIFT (arXiv 2506.07527; code github.com/TheRoadQaQ/ReLIFT, `verl/relift/trainer.py`, `actor.py`):
GRPO, and every question whose G rollouts all fail goes with its demonstration into a buffer; after
the step's RL update, once the buffer holds >= B questions, one SFT update over B of them with its
own AdamW (own lr, constant, grad clip 0.5) and an entropy bonus, as the release does.

The buffer is the method's post-update hook; its rows (indices into the stage's training rows, with
their ids) and the SFT optimizer's state are saved in checkpoints and restored on resume. As in the
release, new questions go in front and the update takes the first B (newest first). With several
processes, B is per process (like prompts_per_step) and the update waits until every process holds
B. Imports torch, pydantic and the methods' base and GRPO; the model-side modules load lazily.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from duotune.errors import DataError, DuotuneError
from duotune.trainers.methods.base import DEMO_ENTRIES, METHODS, Method, PostUpdate, masked_mean
from duotune.trainers.methods.grpo import GRPOSettings, grpo_loss
from duotune.trainers.methods.settings import AdvantageName, advantage_field


class ReliftSettings(GRPOSettings):
    """ReLIFT: GRPO (no std, clip 0.2 / 0.28) plus the failed-question buffer and its SFT update."""

    advantage: AdvantageName = advantage_field("no_std")
    clip_high: float = Field(0.28, ge=0, description="PPO clip epsilon above 1 (ReLIFT: 0.28)")
    entropy_coef: float = Field(0.001, description="entropy bonus of the RL update (ReLIFT release: 0.001)")
    buffer_size: int = Field(64, ge=1, description="B: SFT once the buffer holds B failed questions, on B "
                                                   "of them (ReLIFT: 64; per process)")
    sft_lr: float = Field(1e-6, gt=0, description="learning rate of the SFT update's own AdamW (constant; "
                                                  "ReLIFT: 1e-6)")
    sft_grad_clip: float | None = Field(0.5, gt=0, description="max grad norm of the SFT update (ReLIFT: 0.5; "
                                                               "None = no clipping)")
    sft_entropy_coef: float = Field(0.001, description="entropy bonus in the SFT update (release: 0.001)")

    def post_update_hook(self, stage: Any) -> PostUpdate:
        return FailedQuestionBuffer(self, stage)


def failed_questions(batch: Any) -> list[int]:
    """Prompt indices (in order) of the questions none of whose rollouts is solved."""
    rollouts = (batch.group_ids >= 0) & ~batch.is_demo
    out = []
    for q in torch.unique(batch.prompt_index[rollouts]).tolist():
        rows = rollouts & (batch.prompt_index == q)
        if not bool(batch.correct.to(rows.device)[rows].any()):
            out.append(int(q))
    return out


class FailedQuestionBuffer:
    """ReLIFT's buffer and SFT update (a `PostUpdate` hook)."""

    def __init__(self, settings: ReliftSettings, stage: Any):
        if stage.parallel is not None and stage.parallel.sharded:
            raise DuotuneError("relift's SFT update has its own optimizer, which FSDP2/DeepSpeed do not shard; "
                               "train relift single-process or with DDP (configs/accelerate/multi_cpu.yaml, "
                               "ddp_gpu.yaml)")
        self.settings, self.examples = settings, stage.examples
        self._row = {id(ex): i for i, ex in enumerate(stage.examples)}
        self.params = [p for p in stage.bundle.model.parameters() if p.requires_grad]
        o = stage.cfg.optim
        self.optimizer = torch.optim.AdamW(self.params, lr=settings.sft_lr, betas=o.betas,
                                           weight_decay=o.weight_decay)
        self.items: list[int] = []  # indices into the stage's training rows, newest first
        self.updates = 0

    def __call__(self, stage: Any, step: int, rollout: Any, batch: Any) -> dict[str, float]:
        new = [self._row[id(rollout.examples[q])] for q in failed_questions(batch)]
        for i in new:
            if not self.examples[i].demo:
                raise DataError(f"example {self.examples[i].id!r} has no demonstration; ReLIFT trains on the "
                                "demos of the questions it fails, so every training row needs a `demo`",
                                field="demo")
        self.items = new + self.items
        m = {"relift/added": float(len(new))}
        b = self.settings.buffer_size
        if _everywhere(len(self.items) >= b, stage.accelerator):
            take, self.items = self.items[:b], self.items[b:]
            m.update(self._sft_update(stage, take))
        m.update({"relift/buffer_size": float(len(self.items)), "relift/sft_updates": float(self.updates)})
        return m

    def _sft_update(self, stage: Any, take: list[int]) -> dict[str, float]:
        """One AdamW step of token-mean NLL (- entropy bonus) over the demos of `take`."""
        from duotune.rollout import build_groups, collate  # model-side modules, loaded when used
        from duotune.trainers.compute import backward_full_batch

        cfg, s, model, par = stage.cfg, self.settings, stage.bundle.model, stage.parallel
        rows = build_groups(None, stage.encoder, [self.examples[i] for i in take], None, group_size=0,
                            demo_in_group=False, demo_rows=True,
                            max_completion_length=cfg.rollout.max_completion_length)
        batch = collate(rows, stage.encoder).to(next(model.parameters()).device)

        def loss_fn(logp: torch.Tensor, ent: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
            nll = masked_mean(-logp, batch.response_mask)
            loss = nll if ent is None else nll - s.sft_entropy_coef * masked_mean(ent, batch.response_mask)
            return loss, {"relift/sft_loss": float(nll.detach())}

        self.optimizer.zero_grad(set_to_none=True)
        loss, metrics, _, _ = backward_full_batch(
            par.model, stage.encoder, batch, loss_fn, cfg.compute.token_budget,
            with_entropy=bool(s.sft_entropy_coef), entropy_grad=bool(s.sft_entropy_coef),
            share_prompts=cfg.compute.share_prompts, temperature=1.0, parallel=par)
        norm = par.clip_grad_norm(s.sft_grad_clip)  # on the rank-averaged gradients
        ok = bool(torch.isfinite(loss)) and bool(torch.isfinite(norm))
        if ok:  # a non-finite SFT update is skipped, like a non-finite RL update
            self.optimizer.step()
            self.updates += 1
        self.optimizer.zero_grad(set_to_none=True)
        return {**metrics, "relift/sft_grad_norm": float(norm), "relift/sft_skipped": float(not ok)}

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": [[i, self.examples[i].id] for i in self.items], "updates": self.updates,
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, ex_id in state["buffer"]:
            if i >= len(self.examples) or self.examples[i].id != ex_id:
                raise DuotuneError(f"the checkpoint's ReLIFT buffer holds training row {i} ({ex_id!r}), which "
                                   "data.train does not have at that position; resume with the same data.train, "
                                   "data.limit and data.format")
        self.items = [int(i) for i, _ in state["buffer"]]
        self.updates = int(state["updates"])
        self.optimizer.load_state_dict(state["optimizer"])


def _everywhere(flag: bool, accelerator: Any) -> bool:
    """True when `flag` holds on every process (one all-reduce of the minimum)."""
    if accelerator.num_processes == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor(int(flag), device=accelerator.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


METHODS.register("relift", Method(ReliftSettings, DEMO_ENTRIES.get("none"), grpo_loss,
                                  paper="ReLIFT arXiv 2506.07527; github.com/TheRoadQaQ/ReLIFT"),
                 help="ReLIFT: GRPO + an SFT update on a buffer of failed questions' demos")

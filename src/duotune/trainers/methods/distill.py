"""On-policy distillation (GKD arXiv 2306.13649; KDRL arXiv 2506.02208; TRL's GKDTrainer): a frozen
teacher (any model alias, hub id or path; a trained duotune checkpoint works) scores every token of
the student's own rollouts, and the student minimises a per-token divergence to it (`algos.distill`):
the reverse-KL token reward log pi_T - log pi_S as a policy gradient (default), or forward KL / JSD
over the teacher's top-k tokens. KDRL adds GRPO on the verifier reward: `rl_coef` > 0.

KDRL's choices are settings: its k2 reverse KL is `reverse_kl` (same gradient), its annealed KD
coefficient (5e-3 -> 1e-3) is `kd_coef: {schedule: warmup_cosine, peak: 5e-3, valley: 1e-3}` (cosine
here, where the paper anneals linearly), and reward-guided masking (no KD on responses the verifier
accepts) is `reward_guided`. Teacher and student must share a tokenizer (checked when the stage starts,
`trainers.teacher`). Imports torch, pydantic, algos and the methods' base, settings and GRPO.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from duotune import algos
from duotune.errors import ConfigError
from duotune.trainers.methods.base import (
    DEMO_ENTRIES,
    METHODS,
    LossInputs,
    LossOut,
    Method,
    TeacherSpec,
    masked_mean,
    policy_gradient,
)
from duotune.trainers.methods.grpo import GRPOSettings
from duotune.trainers.methods.settings import ConstantMix, MixSettings


class DistillSettings(GRPOSettings):
    """GRPO's settings (used by the verifier-reward term when rl_coef > 0) plus the teacher term."""

    teacher: str | None = Field(None, description="the teacher: a model alias, hub id or local path "
                                "(a duotune checkpoint folder works); same tokenizer as the student")
    divergence: Literal["reverse_kl", "forward_kl", "jsd"] = Field(
        "reverse_kl", description="reverse_kl: token reward log pi_T - log pi_S as a policy gradient "
        "(GKD on-policy, KDRL's k2 gradient) | forward_kl | jsd: over the teacher's top_k tokens")
    top_k: int = Field(20, ge=1, description="teacher tokens per position for forward_kl / jsd (both "
                       "distributions renormalised over them)")
    jsd_beta: float = Field(0.5, gt=0, lt=1, description="jsd: M = beta T + (1 - beta) S (TRL/GKD: 0.5)")
    teacher_temperature: float = Field(1.0, gt=0, description="temperature the teacher is scored at")
    kd_coef: MixSettings = Field(default_factory=ConstantMix, description="weight of the distillation term "
                                 "over the stage: {schedule: constant, value} (default 1) | {schedule: "
                                 "warmup_cosine, ...} (KDRL: anneal 5e-3 -> 1e-3)")
    rl_coef: float = Field(0.0, ge=0, description="weight of GRPO's verifier-reward term (0 = distillation "
                           "alone, GKD; KDRL: 1)")
    reward_guided: bool = Field(False, description="no distillation on responses the verifier accepts "
                                "(KDRL's reward-guided masking)")

    def teacher_spec(self) -> TeacherSpec:
        if not self.teacher:
            raise ConfigError("method 'distill' needs algo.teacher: a model alias, hub id or local path "
                              "(e.g. a duotune checkpoint folder) that shares the student's tokenizer")
        return TeacherSpec(self.teacher, 0 if self.divergence == "reverse_kl" else self.top_k,
                           self.teacher_temperature)


def distill_loss(inp: LossInputs, logp: torch.Tensor, ent: torch.Tensor | None) -> LossOut:
    """kd_coef(t) x aggregate(divergence) + GRPO with advantages x rl_coef (KL, entropy as GRPO's).

    With top-k divergences logp is [N, T, 1 + k]: column 0 the sampled tokens, then the teacher's ids."""
    s, teacher = inp.settings, inp.teacher
    lp = logp[..., 0] if logp.dim() == 3 else logp
    rows = ~inp.batch.is_demo
    kd_mask = inp.mask * rows[:, None].to(inp.mask.dtype)
    if s.reward_guided:
        kd_mask = kd_mask * (~inp.correct)[:, None].to(kd_mask.dtype)
    if s.divergence == "reverse_kl":
        tok = algos.divergence("reverse_kl")(lp, teacher.logp)
    else:
        params = {"beta": s.jsd_beta} if s.divergence == "jsd" else {}
        tok = algos.divergence(s.divergence)(logp[..., 1:], teacher.topk_logp, **params)
    kd = algos.aggregate(tok, kd_mask, s.aggregation, l_max=inp.l_max)
    w = s.kd_coef.at(inp.progress)
    rl = policy_gradient(inp._replace(advantages=inp.advantages * s.rl_coef), lp, ent, rows)
    with torch.no_grad():
        gap = masked_mean(lp - teacher.logp, inp.mask * rows[:, None].to(inp.mask.dtype))
    m = {**rl.metrics, "loss/kd": float(kd.detach()), "distill/kd_coef": w,
         # k1 estimate of KL(pi_S || pi_T) per token on the student's samples
         "distill/reverse_kl": float(gap), "distill/token_frac": float(kd_mask.sum() / inp.mask.sum().clamp(min=1))}
    if ent is not None:
        m["entropy/mean"] = float(masked_mean(ent.detach(), inp.mask))
    return LossOut(rl.loss + w * kd, m, rl.kl)


METHODS.register("distill", Method(DistillSettings, DEMO_ENTRIES.get("teacher"), distill_loss,
                                   paper="GKD arXiv 2306.13649; KDRL arXiv 2506.02208; SPEC 10"),
                 help="on-policy distillation: a frozen teacher scores the student's rollouts (+ GRPO: KDRL)")

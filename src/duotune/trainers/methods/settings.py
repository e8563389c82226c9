"""Typed pieces that methods' settings models are built from: KL terms (one model per controller),
per-token demo weights (one per `demo_weight` entry), mixing schedules, and the shared field types.

Each piece is a pydantic model with `extra="forbid"`, so a key a piece does not take is an error;
a bare name ("luffy", "fixed") stands for that piece with its defaults. Imports pydantic, the algos
registries and `duotune.config` only.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from duotune import algos
from duotune.config import Cfg, RegistryName

AdvantageName = RegistryName(algos.ADVANTAGES)
AggregationName = RegistryName(algos.AGGREGATIONS)


def _tagged(tag: str, default: str):
    """Before-validator: a bare string names the variant; a mapping without the tag gets `default`."""
    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return {tag: value}
        if isinstance(value, dict) and tag not in value:
            return {**value, tag: default}
        return value
    return BeforeValidator(fill)


# ------------------------------------------------------------------ KL to the reference (SPEC 1, 2)

class _KLBase(Cfg):
    estimator: RegistryName(algos.KL_ESTIMATORS) = Field("k3", description="per-token KL estimator "
                                                         "k1 | k2 | k3 (GRPO: k3)")
    clamp: float | None = Field(None, gt=0, description="bound the per-token estimate to [-c, c] (verl: "
                                "10 for k3; None = off, as in TRL)")


class FixedKLSettings(_KLBase):
    """A constant KL weight; beta 0 loads no reference model."""

    controller: Literal["fixed"] = Field("fixed", description="fixed | adaptive | grpo_d")
    beta: float = Field(0.0, ge=0, description="KL weight (0 = no KL term, no reference model)")

    def active(self) -> bool:
        return self.beta > 0

    def build(self, total_steps: int) -> algos.FixedKL:
        return algos.FixedKL(self.beta)


class AdaptiveKLSettings(_KLBase):
    """OpenRLHF's adaptive controller (Ziegler et al. 2019); VLAA-Thinking: init 1e-3, target 5e-4."""

    controller: Literal["adaptive"] = Field("adaptive", description="fixed | adaptive | grpo_d")
    beta: float = Field(1e-3, gt=0, description="initial KL weight (VLAA-Thinking: 1e-3)")
    target: float = Field(5e-4, gt=0, description="target KL per token (VLAA-Thinking: 5e-4)")
    horizon: int = Field(10000, ge=1, description="horizon in sampled sequences (OpenRLHF: 10000)")

    def active(self) -> bool:
        return True

    def build(self, total_steps: int) -> algos.AdaptiveKL:
        return algos.AdaptiveKL(self.beta, self.target, self.horizon)


class GrpoDKLSettings(_KLBase):
    """OThink-MR1's schedule: beta_mid -> beta_min over explore_frac of the stage, then -> beta_max."""

    controller: Literal["grpo_d"] = Field("grpo_d", description="fixed | adaptive | grpo_d")
    beta_min: float = Field(0.0, ge=0, description="lowest beta, at explore_frac of the stage "
                            "(paper: counting 0.04, geometry 0.0)")
    beta_max: float = Field(0.02, ge=0, description="beta of the stage's last rollout step "
                            "(paper: counting 0.10, geometry 0.02)")
    explore_frac: float = Field(0.3, gt=0, lt=1, description="exploration share of the stage (paper: 0.3)")

    def active(self) -> bool:
        return max(self.beta_min, self.beta_max) > 0

    def build(self, total_steps: int) -> algos.GrpoDKL:
        return algos.GrpoDKL(self.beta_min, self.beta_max, total_steps, self.explore_frac)


KLSettings = Annotated[FixedKLSettings | AdaptiveKLSettings | GrpoDKLSettings,
                       Field(discriminator="controller"), _tagged("controller", "fixed")]
GrpoDOnly = Annotated[GrpoDKLSettings, _tagged("controller", "grpo_d")]


# ------------------------------------------------------------------ demo-token weights (DESIGN axis 2)

class _Weight(Cfg):
    def params(self) -> dict[str, Any]:
        """Keyword parameters of the registered objective (`algos.demo_objective`)."""
        return self.model_dump(exclude={"name"})


class NllWeight(_Weight):
    """Weight 1 on every demo token: plain NLL."""

    name: Literal["nll"] = Field("nll", description="nll | dft | chord_phi | luffy | trapo")


class DftWeight(_Weight):
    """Weight sg(p) (DFT, arXiv 2508.05629)."""

    name: Literal["dft"] = Field("dft", description="nll | dft | chord_phi | luffy | trapo")


class ChordPhiWeight(_Weight):
    """Weight sg(p (1 - p)) (CHORD-phi, arXiv 2508.11408)."""

    name: Literal["chord_phi"] = Field("chord_phi", description="nll | dft | chord_phi | luffy | trapo")


class LuffyWeight(_Weight):
    """LUFFY's policy shaping J = p / (p + gamma) (arXiv 2504.14945)."""

    name: Literal["luffy"] = Field("luffy", description="nll | dft | chord_phi | luffy | trapo")
    gamma: float = Field(0.1, gt=0, description="gamma of p / (p + gamma) (LUFFY: 0.1)")


class TrapoWeight(_Weight):
    """TRAPO's truncated weight J = p / sg(max(p, alpha)) (arXiv 2512.17636)."""

    name: Literal["trapo"] = Field("trapo", description="nll | dft | chord_phi | luffy | trapo")
    alpha: float = Field(0.1, gt=0, description="alpha of p / max(sg(p), alpha) (TRAPO: 0.1)")


_WEIGHTS = NllWeight | DftWeight | ChordPhiWeight | LuffyWeight | TrapoWeight


def demo_weight_type(default: str) -> Any:
    """The demo-weight field type; a mapping without `name` means `default`."""
    return Annotated[_WEIGHTS, Field(discriminator="name"), _tagged("name", default)]


# ------------------------------------------------------------------ mixing schedules (DESIGN axis 3)

class ConstantMix(Cfg):
    """The same weight at every step."""

    schedule: Literal["constant"] = Field("constant", description="constant | warmup_cosine")
    value: float = Field(1.0, ge=0, description="the weight")

    def at(self, progress: float) -> float:
        return algos.mix_schedule("constant")(progress, value=self.value)


class WarmupCosineMix(Cfg):
    """CHORD's mu: linear 0 -> peak over warmup_frac, cosine peak -> valley over decay_frac, then valley."""

    schedule: Literal["warmup_cosine"] = Field("warmup_cosine", description="constant | warmup_cosine")
    warmup_frac: float = Field(0.0, ge=0, le=1, description="share of the stage warming up (CHORD: 0)")
    decay_frac: float | None = Field(None, ge=0, le=1, description="share of the stage in cosine decay "
                                     "(None = the rest of it)")
    peak: float = Field(0.9, ge=0, description="mu_peak (CHORD-mu: 0.9)")
    valley: float = Field(0.05, ge=0, description="mu_valley (CHORD-mu: 0.05)")

    def at(self, progress: float) -> float:
        return algos.mix_schedule("warmup_cosine")(progress, warmup_frac=self.warmup_frac,
                                                   decay_frac=self.decay_frac, peak=self.peak,
                                                   valley=self.valley)


MixSettings = Annotated[ConstantMix | WarmupCosineMix, Field(discriminator="schedule"),
                        _tagged("schedule", "constant")]


# ------------------------------------------------------------------ fields several methods share

def advantage_field(default: str) -> Any:
    return Field(default, description="group advantage estimator: grpo (mean/std) | no_std | dr_grpo "
                                      "(mean only)")


def adv_eps_field(default: float = 1e-6) -> Any:
    return Field(default, gt=0, description="epsilon in the std normalisation (R1-V: 1e-4, TRL: 1e-4, "
                                            "verl: 1e-6)")


def mini_batches_field() -> Any:
    return Field(1, ge=1, description="split each rollout batch into k disjoint mini-batches of whole "
                                      "prompt groups, one optimizer update each, the ratio taken against "
                                      "the sampling policy (verl/LUFFY/SRFT semantics; their released "
                                      "settings: 2)")


class ClipSettings(Cfg):
    """The PPO surrogate's clip range and bounds (mixed into grpo, grpo_d, rl_sft_loss, luffy)."""

    clip_low: float = Field(0.2, ge=0, description="PPO clip epsilon below 1")
    clip_high: float = Field(0.2, ge=0, description="PPO clip epsilon above 1 (DAPO clip-higher: 0.28)")
    dual_clip: float | None = Field(None, gt=1, description="dual-clip bound c > 1 on negative "
                                    "advantages (Ye et al. 2020; verl: 3.0; None = off)")
    log_ratio_clamp: float | None = Field(None, gt=0, description="bound logp - old_logp to [-c, c] "
                                          "before the exp (verl: 20; None = off, as in TRL)")

    def clip_kwargs(self) -> dict[str, Any]:
        return {"eps_low": self.clip_low, "eps_high": self.clip_high, "dual_clip": self.dual_clip,
                "log_ratio_clamp": self.log_ratio_clamp}


class RolloutCorrectionSettings(Cfg):
    """Correction of the sampler/trainer log-prob mismatch on rollout tokens (mixed in before
    `MethodSettings` by the methods whose policy-gradient term applies it: grpo and its family, luffy)."""

    rollout_correction: RegistryName(algos.ROLLOUT_CORRECTIONS) = Field(
        "none", description="none | tis: weight each rollout token's policy-gradient term by min(exp(logp_train "
                            "- logp_sampler), tis_cap), detached (TRL's vllm_importance_sampling_correction, "
                            "verl's rollout correction); the mismatch is logged either way")
    tis_cap: float = Field(2.0, gt=0, description="cap C of the truncated importance weights (TRL, verl: 2)")

    def correction(self) -> tuple[str, float]:
        return self.rollout_correction, self.tis_cap

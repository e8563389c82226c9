"""KL to the reference policy: per-token estimators (SPEC 1) and the beta controllers (SPEC 2).

Registries `kl_estimator` (k1, k2, k3) and `kl_controller` (fixed, adaptive, grpo_d). Controllers
are small stateful objects with `value`, `update(observed_kl, step, n_samples=1)` and
`state_dict()/load_state_dict()` for checkpoints. Imports torch, duotune.errors/registry only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from duotune.algos import _shapes
from duotune.errors import ConfigError
from duotune.registry import Registry

KL_ESTIMATORS: Registry[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = Registry("kl_estimator")
KL_CONTROLLERS: Registry[Callable[..., Any]] = Registry("kl_controller")

# Schulman's estimators of KL(pi_theta || pi_ref) from samples of pi_theta ("Approximating KL
# divergence", 2020); k3 is unbiased, low-variance and always >= 0 (GRPO's choice).
KL_ESTIMATORS.register("k1", lambda logp, ref: logp - ref, help="k1 = logp - ref_logp (unbiased, can be < 0)")
KL_ESTIMATORS.register("k2", lambda logp, ref: 0.5 * (logp - ref).pow(2),
                       help="k2 = 0.5 * (logp - ref_logp)^2 (biased, >= 0)")
KL_ESTIMATORS.register("k3", lambda logp, ref: torch.expm1(ref - logp) - (ref - logp),
                       help="k3 = exp(ref - logp) - (ref - logp) - 1 (unbiased, >= 0; GRPO)")


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k3",
                clamp: float | None = None) -> torch.Tensor:
    """Per-token KL estimate [N, T] of `kind` in k1 | k2 | k3 (SPEC 1); unmasked.

    clamp = c bounds the estimate to [-c, c] (verl's `low_var_kl` clamps k3 to [-10, 10]); None
    (TRL's choice, the default) leaves it unbounded.
    """
    fn = KL_ESTIMATORS.get(kind)
    _shapes.tensor("logp", logp)
    _shapes.same_shape("ref_logp", ref_logp, "logp", logp)
    kl = fn(logp, ref_logp)
    if clamp is not None:
        if clamp <= 0:
            raise ConfigError(f"kl clamp must be > 0 (or None for no clamp), got {clamp}")
        kl = kl.clamp(-clamp, clamp)
    return kl


def grpo_d_beta(step: int, total_steps: int, beta_min: float, beta_max: float,
                explore_frac: float = 0.3) -> float:
    """GRPO-D's KL weight at position `step` of the schedule [0, total_steps] (OThink-MR1, SPEC 2).

    w = round(explore_frac * t), kept inside [1, t - 1] so that every check of SPEC 2 holds:
    beta(0) = beta_mid = (beta_min + beta_max) / 2, beta(w) = beta_min, beta(t) = beta_max, continuous
    at w. beta falls linearly from beta_mid to beta_min over [0, w], then rises linearly to beta_max.
    t = 1 leaves no room for the fall: beta(0) = beta_mid, beta(1) = beta_max. Python's round (half
    to even) is used, as the equation writes round.
    """
    if total_steps < 1:
        raise ConfigError(f"grpo_d needs total_steps >= 1, got {total_steps}")
    if not 0 < explore_frac < 1:
        raise ConfigError(f"grpo_d explore_frac must lie in (0, 1), got {explore_frac}")
    if not 0 <= step <= total_steps:
        raise ConfigError(f"grpo_d step {step} is outside [0, total_steps={total_steps}]")
    mid = (beta_min + beta_max) / 2
    if total_steps == 1:
        return mid if step == 0 else beta_max
    w = min(max(1, round(explore_frac * total_steps)), total_steps - 1)
    if step <= w:
        return mid - (mid - beta_min) * step / w
    return beta_min + (beta_max - beta_min) * (step - w) / (total_steps - w)


class FixedKL:
    """Constant beta (GRPO; OThink-MR1's constant-beta baselines).

    Every controller is updated once per rollout step, after that step's updates, with the KL the
    loss observed (token mean, averaged over the step's updates) and the number of sampled sequences
    it was observed on; its `value` is the beta of the whole next rollout batch.
    """

    def __init__(self, beta: float):
        self.value = float(beta)

    def update(self, observed_kl: float, step: int, n_samples: int = 1) -> float:
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKL(FixedKL):
    """Ziegler et al. 2019 / OpenRLHF: beta <- beta * (1 + clip(kl/target - 1, -0.2, 0.2) * n/horizon).

    n = sequences sampled this step (OpenRLHF passes rollout_batch_size * n_samples_per_prompt);
    VLAA-Thinking used init 1e-3, target 5e-4 (SPEC 2/3).
    """

    def __init__(self, init: float, target: float = 5e-4, horizon: int = 10000):
        if target <= 0 or horizon <= 0:
            raise ConfigError(f"adaptive KL needs target > 0 and horizon > 0, got {target}, {horizon}")
        super().__init__(init)
        self.target, self.horizon = float(target), int(horizon)

    def update(self, observed_kl: float, step: int, n_samples: int = 1) -> float:
        err = min(max(float(observed_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + err * n_samples / self.horizon
        return self.value


class GrpoDKL(FixedKL):
    """OThink-MR1's GRPO-D schedule over a stage of `total_steps` rollout steps (SPEC 2).

    The stage's steps s = 0 .. T-1 sit on the equation's [0, t] with t = T - 1, so the first rollout
    batch uses beta_mid and the last one beta_max; beta is constant within a rollout batch (however
    many updates it makes). A one-step stage uses beta_mid.
    """

    def __init__(self, beta_min: float, beta_max: float, total_steps: int, explore_frac: float = 0.3):
        if total_steps < 1:
            raise ConfigError(f"grpo_d needs total_steps >= 1, got {total_steps}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        self.total_steps, self.explore_frac = int(total_steps), float(explore_frac)
        super().__init__(self.beta_at(0))

    def beta_at(self, step: int) -> float:
        """The beta of rollout step `step` (0-based) of the stage."""
        if self.total_steps == 1:
            return (self.beta_min + self.beta_max) / 2
        return grpo_d_beta(min(step, self.total_steps - 1), self.total_steps - 1, self.beta_min,
                           self.beta_max, self.explore_frac)

    def update(self, observed_kl: float, step: int, n_samples: int = 1) -> float:
        """`step` = rollout steps done; the value becomes the beta of the next one."""
        self.value = self.beta_at(step)
        return self.value


KL_CONTROLLERS.register("fixed", FixedKL)
KL_CONTROLLERS.register("adaptive", AdaptiveKL)
KL_CONTROLLERS.register("grpo_d", GrpoDKL)


def build_kl_controller(name: str, **params: Any) -> Any:
    """Build controller `name` from keyword params.

    A trainer may pass its whole KL config: each controller takes the keys its constructor
    declares and ignores the rest; `beta` stands for adaptive's `init` when `init` is not given.
    A missing required key raises ConfigError naming it.
    """
    cls = KL_CONTROLLERS.get(name)
    if "init" not in params and "beta" in params:
        params = {**params, "init": params["beta"]}
    sig = inspect.signature(cls)
    kwargs = {k: v for k, v in params.items() if k in sig.parameters}
    missing = [p.name for p in sig.parameters.values()
               if p.default is inspect.Parameter.empty and p.name not in kwargs]
    if missing:
        raise ConfigError(f"KL controller {name!r} needs {', '.join(missing)}")
    return cls(**kwargs)

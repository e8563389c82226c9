"""`TrainConfig`: every training knob, validated when loaded; each field's description is the CLI help.

Algorithm choices are registry names (validated against `duotune.algos`/`duotune.rewards`
registries and the `method` registry here). Imports pydantic, the registries and `duotune.config`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

import duotune.algos  # noqa: F401 - fills the advantage/policy_loss/aggregation/kl/demo registries
from duotune.config import Cfg, RegistryName
from duotune.data.formats import data_formats
from duotune.data.templates import prompt_styles
from duotune.models.lora import DEFAULT_TARGETS
from duotune.registry import Registry
from duotune.rewards import validate_reward_name  # importing fills the reward registry
from duotune.trainers.methods import METHODS

_R = Registry.all()


class DataCfg(Cfg):
    train: str = Field(..., description="training data: a .jsonl/.parquet file or a `datasets` source")
    format: str = Field("auto", description=f"row format: auto (detected from the first row) | "
                        f"{' | '.join(data_formats.names())}; TRL's messages / prompt-completion / "
                        "prompt-only rows are messages and generic")
    limit: int | None = Field(None, description="use only the first N rows")
    prompt_style: RegistryName(prompt_styles) | None = Field(  # type: ignore[valid-type]
        "boxed", description=f"prompt style: {' | '.join(prompt_styles.names())} (see `duotune list "
        "prompt_style`); null keeps the prompts and demos as the rows give them")
    system_prompt: str | None = Field(None, description="system prompt prepended to every prompt")
    shuffle: bool = Field(True, description="shuffle the rows each epoch (seeded by run.seed)")


class RolloutCfg(Cfg):
    group_size: int = Field(8, ge=1, description="G: sequences per prompt (incl. the demo for luffy/srft)")
    temperature: float = Field(1.0, ge=0, description="sampling temperature of training rollouts")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus filter (1.0 = off)")
    top_k: int | None = Field(None, description="top-k filter (None = off)")
    max_completion_length: int = Field(256, ge=1, description="max new tokens; demos are cut to it too")
    drop_truncated: bool = Field(False, description="drop samples without EOS from the loss (DAPO)")
    batch_size: int = Field(64, ge=1, description="sequences per `generate` call")


class RewardCfg(Cfg):
    names: list[Annotated[str, AfterValidator(validate_reward_name)]] = Field(
        ["math"], description="rewards, summed: registered names (duotune list reward), "
        "'pkg.mod:fn' (your function) or 'verl:pkg.mod.compute_score'")
    weights: list[float] | None = Field(None, description="one weight per reward (default all 1)")

    @model_validator(mode="after")
    def _weights_match(self) -> RewardCfg:
        if self.weights is not None and len(self.weights) != len(self.names):
            raise ValueError(f"reward.weights has {len(self.weights)} entries for "
                             f"{len(self.names)} reward names; give one weight per name")
        return self


class KLCfg(Cfg):
    controller: RegistryName(_R["kl_controller"]) = Field(
        "fixed", description="KL weight controller: fixed | adaptive | grpo_d (SPEC 2)")
    beta: float = Field(0.0, ge=0, description="KL weight (fixed) or initial weight (adaptive); "
                                               "0 with controller fixed loads no reference model")
    estimator: RegistryName(_R["kl_estimator"]) = Field("k3", description="per-token KL estimator")
    beta_min: float = Field(0.0, ge=0, description="grpo_d: lowest beta, reached at explore_frac")
    beta_max: float = Field(0.02, ge=0, description="grpo_d: beta at the last step of the stage")
    explore_frac: float = Field(0.3, gt=0, lt=1, description="grpo_d: exploration share of the steps")
    target: float = Field(5e-4, gt=0, description="adaptive: target KL")
    horizon: int = Field(10000, ge=1, description="adaptive: horizon in samples")


class AlgoCfg(Cfg):
    advantage: RegistryName(_R["advantage"]) = Field("grpo", description="group advantage estimator")
    adv_eps: float = Field(1e-6, gt=0, description="epsilon in the std normalisation")
    policy_loss: RegistryName(_R["policy_loss"]) = Field("ppo_clip", description="on-policy token loss")
    clip_low: float = Field(0.2, ge=0, description="PPO clip epsilon below 1")
    clip_high: float = Field(0.2, ge=0, description="PPO clip epsilon above 1 (DAPO: 0.28)")
    aggregation: RegistryName(_R["aggregation"]) = Field(
        "token_mean", description="how the [N,T] token loss becomes a scalar (SPEC 1)")
    entropy_coef: float = Field(0.0, description="entropy bonus: loss -= coef * mean(H)")
    kl: KLCfg = Field(default_factory=KLCfg, description="KL regularisation")
    demo_weight: RegistryName(_R["demo_weight"]) = Field(
        "luffy", description="per-token weight on demo tokens (axis 2): luffy = p/(p+gamma)")
    demo_gamma: float = Field(0.1, gt=0, description="gamma of LUFFY's policy shaping p/(p+gamma)")
    demo_in_group_stats: bool = Field(True, description="demos count in group mean/std (axis 4)")
    sft_coef: float = Field(1.0, ge=0, description="weight of the demo NLL (rl_sft_loss)")
    mix_schedule: RegistryName(_R["mix_schedule"]) = Field(
        "constant", description="schedule of the demo-loss weight over the stage (axis 3)")
    srft_sft_weight_sign: Literal[-1, 1] = Field(
        -1, description="SRFT w_sft = 0.5*exp(sign*H): -1 as in the paper, +1 as the released code")
    srft_entropy_granularity: Literal["sequence", "token", "batch"] = Field(
        "sequence", description="SRFT: entropy used in the weights")


class OptimCfg(Cfg):
    lr: float = Field(1e-6, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    schedule: Literal["constant", "cosine", "linear"] = Field("constant", description="lr schedule")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="share of steps with linear warm-up")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine/linear floor as a share of lr")
    grad_clip: float | None = Field(1.0, description="max global grad norm (None = no clipping)")


class ComputeCfg(Cfg):
    token_budget: int = Field(16384, ge=1, description="max padded tokens per forward micro-batch")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto = float32 on CPU, bfloat16 on GPU")
    freeze_vision_tower: bool = Field(False, description="VLMs: do not train the vision encoder")
    share_prompts: bool = Field(True, description="text models: run each prompt once per micro-batch "
                                "and reuse its KV cache for the rows that continue it (a GRPO group); "
                                "same values, fewer FLOPs")


class LoraCfg(Cfg):
    enabled: bool = Field(False, description="train LoRA adapters (peft) instead of every weight")
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha (the update is scaled by alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: list[str] = Field(list(DEFAULT_TARGETS), min_length=1,
                                      description="names of the linear layers that get adapters")
    full_modules: list[str] = Field([], description="modules trained in full beside the adapters, "
                                    "e.g. [vision_tower, multi_modal_projector] for a LLaVA VLM")
    full_lr: float | None = Field(None, gt=0, description="learning rate of full_modules "
                                  "(default: optim.lr, which the adapters use)")


class EvalCfg(Cfg):
    benchmark: str | None = Field(None, description="benchmark evaluated during training")
    every: int = Field(0, ge=0, description="evaluate every N steps (0 = never)")
    limit: int = Field(50, ge=1, description="items of the benchmark to evaluate")
    max_new_tokens: int = Field(256, ge=1, description="decode length of in-training evaluation")


class RunCfg(Cfg):
    output_dir: str = Field("runs", description="parent folder of run folders")
    name: str | None = Field(None, description="run folder name (default: method-model-time)")
    seed: int = Field(0, description="seed for data order, sampling and init")
    save_every: int = Field(0, ge=0, description="checkpoint every N steps (0 = only at the end)")
    keep_last: int = Field(2, ge=1, description="checkpoints kept (older ones are deleted)")
    resume: str = Field("auto", description="auto (latest checkpoint in the run folder) | never | PATH")
    stop_after: int | None = Field(None, description="stop after this global step (for resume tests)")
    max_bad_steps: int = Field(3, ge=1, description="consecutive non-finite losses before stopping")
    progress: bool = Field(True, description="show the progress line (reward, solve rate, KL, entropy, "
                           "length, loss, s/step) and the libraries' loading bars")
    log_with: list[str] = Field([], description="experiment trackers through accelerate, e.g. [tensorboard], "
                                "[wandb], [mlflow] (pip install 'duotune[tracking]'); logs in <run>/trackers")
    project: str = Field("duotune", description="tracker project name (wandb/mlflow project, tensorboard folder)")
    rollouts_every: int = Field(1, ge=0, description="write the step's sampled rows (prompt, completion, "
                                "rewards, advantage, is_demo) to rollouts/step-NNNNNN.jsonl every N steps "
                                "(0 = never)")
    keep_optimizer_state: bool = Field(False, description="keep trainer_state.pt (optimizer moments, ~2x the "
                                       "model) and stage-<k>-init copies once the run has finished; by default "
                                       "they are deleted then (only a resume needs them; the models stay)")
    plots: bool = Field(True, description="write curves.png at the end")


class StageCfg(Cfg):
    method: RegistryName(METHODS) = Field(..., description="method of this stage")
    steps: int = Field(..., ge=1, description="training steps of this stage")
    overrides: dict[str, Any] = Field({}, description="dotted key: value overrides for this stage")


class TrainConfig(Cfg):
    method: RegistryName(METHODS) = Field("grpo", description="training method (see `duotune list method`)")
    model: str = Field("smollm2-135m-instruct", description="model alias, hub id or local path")
    steps: int = Field(10, ge=1, description="training steps (one rollout batch each)")
    prompts_per_step: int = Field(4, ge=1, description="prompts per step (per process)")
    num_iterations: int = Field(1, ge=1, description="optimizer updates per rollout batch")
    data: DataCfg = Field(..., description="training data")
    rollout: RolloutCfg = Field(default_factory=RolloutCfg, description="sampling")
    reward: RewardCfg = Field(default_factory=RewardCfg, description="rewards")
    algo: AlgoCfg = Field(default_factory=AlgoCfg, description="losses and advantages")
    optim: OptimCfg = Field(default_factory=OptimCfg, description="optimizer")
    compute: ComputeCfg = Field(default_factory=ComputeCfg, description="compute")
    lora: LoraCfg = Field(default_factory=LoraCfg, description="LoRA (peft) instead of full fine-tuning")
    eval: EvalCfg = Field(default_factory=EvalCfg, description="in-training evaluation")
    run: RunCfg = Field(default_factory=RunCfg, description="run folder, logging, checkpoints")
    stages: list[StageCfg] = Field([], description="pipeline: stages run in order, each from the "
                                                   "previous stage's weights (overrides method/steps)")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.eval.every and not self.eval.benchmark:
            raise ValueError("eval.every is set but eval.benchmark is not; name a benchmark")
        return self


def stage_configs(cfg: TrainConfig) -> list[TrainConfig]:
    """One config per stage (a single stage when `stages` is empty), overrides applied."""
    from duotune.config import apply_overrides, build

    if not cfg.stages:
        return [cfg]
    out = []
    for k, st in enumerate(cfg.stages):
        data = cfg.model_dump(mode="json")
        data.update(method=st.method, steps=st.steps, stages=[])
        apply_overrides(data, [f"{key}={_yaml(v)}" for key, v in st.overrides.items()])
        out.append(build(TrainConfig, data, source=f"stages[{k}]"))
    return out


def _yaml(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")

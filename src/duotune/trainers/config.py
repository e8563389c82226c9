"""`TrainConfig`: every training knob, validated when loaded; each field's description is the CLI help.

The method's own settings (`algo:`) are validated by that method's typed model (`trainers.methods`),
so a key the method does not take is an error naming the method and the keys it takes. Imports
pydantic, the registries and `duotune.config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from duotune.config import Cfg, RegistryName
from duotune.data.formats import data_formats
from duotune.data.templates import prompt_styles
from duotune.errors import ConfigError
from duotune.models.lora import DEFAULT_TARGETS
from duotune.rewards import validate_reward_name  # importing fills the reward registry
from duotune.trainers.methods import METHODS, settings_for


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


class VLLMCfg(Cfg):
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="share of GPU memory the colocated "
                                          "vLLM engine may take (weights + KV cache); the trainer needs the rest")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one engine is split over (TRL colocate: "
                                      "each training rank holds one slice)")
    enable_sleep_mode: bool = Field(False, description="CUDA: free the engine's weights and KV cache while "
                                    "the trainer runs, re-push the weights before each rollout")
    max_model_len: int | None = Field(None, ge=1, description="longest prompt + completion the engine "
                                      "serves (None = the model's maximum)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="engine weights' dtype (auto = the policy's: fp32 on CPU, bf16 on GPU)")
    cpu_kv_cache_gib: int = Field(2, ge=1, description="CPU only: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE)")
    enforce_eager: bool | None = Field(None, description="no graph compilation (None = eager on CPU, where "
                                       "it starts in seconds at the same speed; CUDA graphs on GPU)")


class RolloutCfg(Cfg):
    group_size: int = Field(8, ge=1, description="G: sequences per prompt (incl. the demo for luffy/srft)")
    temperature: float = Field(1.0, ge=0, description="sampling temperature of training rollouts")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus filter (1.0 = off)")
    top_k: int | None = Field(None, description="top-k filter (None = off)")
    max_completion_length: int = Field(256, ge=1, description="max new tokens; demos are cut to it too")
    drop_truncated: bool = Field(False, description="drop samples without EOS from the loss (DAPO)")
    dynamic_sampling: bool = Field(False, description="DAPO dynamic sampling: drop groups whose rewards "
                                   "are all equal and sample more prompts until the step holds "
                                   "prompts_per_step informative groups (trainers.sampling)")
    max_extra_rounds: int = Field(3, ge=0, description="dynamic sampling: extra sampling rounds per step "
                                  "at most, then the batch is filled with equal-reward groups (verl: "
                                  "max_num_gen_batches - 1)")
    batch_size: int = Field(64, ge=1, description="sequences per `generate` call")
    engine: Literal["auto", "hf", "vllm"] = Field(
        "auto", description="sampler: vllm (colocated engine, weights synced after each optimizer step), "
        "hf (transformers generate), auto = vllm when it is installed and serves the model, else hf")
    vllm: VLLMCfg = Field(default_factory=VLLMCfg, description="vLLM engine settings (rollout.engine vllm/auto)")


class RewardCfg(Cfg):
    names: list[Annotated[str, AfterValidator(validate_reward_name)]] = Field(
        ["math"], description="rewards, summed: registered names (duotune list reward), "
        "'pkg.mod:fn' (your function) or 'verl:pkg.mod.compute_score'")
    weights: list[float] | None = Field(None, description="one weight per reward (default all 1)")
    params: dict[str, dict[str, Any]] = Field({}, description="keyword parameters per reward name, e.g. "
                                              "{math: {mode: lenient}} (the verifier's extraction mode; "
                                              "training default strict)")

    @model_validator(mode="after")
    def _weights_match(self) -> RewardCfg:
        if self.weights is not None and len(self.weights) != len(self.names):
            raise ValueError(f"reward.weights has {len(self.weights)} entries for "
                             f"{len(self.names)} reward names; give one weight per name")
        unknown = sorted(set(self.params) - set(self.names))
        if unknown:
            raise ValueError(f"reward.params names {unknown}, which are not in reward.names {self.names}")
        return self


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


def _known_benchmark(name: str | None) -> str | None:
    """A registered benchmark name, checked when the config loads (not at the first eval, steps later)."""
    from duotune.eval.benchmarks import benchmarks

    return name if name is None else benchmarks.validate(name)


def _folder_name(name: str | None) -> str | None:
    """One plain folder name, so the run folder stays inside run.output_dir."""
    if name is not None and (not name.strip() or name in (".", "..") or any(c in name for c in "/\\\0")):
        raise ValueError(f"run.name {name!r} must be one folder name (no '/', '\\', '..'), so the run "
                         "stays inside run.output_dir")
    return name


def _no_parent_steps(path: str) -> str:
    """An output folder that does not climb out of where it is given ('..' parts); absolute is fine."""
    if ".." in Path(path).parts:
        raise ValueError(f"run.output_dir {path!r} climbs out with '..'; give a folder below the working "
                         "directory or an absolute path")
    return path


class EvalCfg(Cfg):
    benchmark: Annotated[str | None, AfterValidator(_known_benchmark)] = Field(
        None, description="benchmark evaluated during training")
    every: int = Field(0, ge=0, description="evaluate every N steps (0 = never)")
    limit: int = Field(50, ge=1, description="items of the benchmark to evaluate")
    max_new_tokens: int = Field(256, ge=1, description="decode length of in-training evaluation")


class RunCfg(Cfg):
    output_dir: Annotated[str, AfterValidator(_no_parent_steps)] = Field(
        "runs", description="parent folder of run folders")
    name: Annotated[str | None, AfterValidator(_folder_name)] = Field(
        None, description="run folder name (default: method-model-time)")
    seed: int = Field(0, description="seed for data order, sampling and init")
    save_every: int = Field(0, ge=0, description="checkpoint every N steps (0 = only at the end)")
    keep_last: int = Field(2, ge=1, description="checkpoints kept (older ones are deleted)")
    resume: str = Field("auto", description="auto (latest checkpoint in the run folder) | never | PATH")
    stop_after: int | None = Field(None, description="stop after this global step (for resume tests)")
    max_bad_steps: int = Field(3, ge=1, description="consecutive skipped or rolled-back updates before stopping")
    max_loss: float | None = Field(None, gt=0, description="loss-spike bound: an update whose |loss| "
                                   "exceeds it is not applied (None = no bound)")
    max_param_growth: float | None = Field(2.0, gt=1, description="an update that multiplies the norm of "
                                           "the trained weights by more than this (or makes them non-"
                                           "finite) is rolled back (None = only non-finite)")
    rollback: bool = Field(True, description="keep a copy of the trained weights and optimizer state "
                           "before each update, to roll a bad one back (false: stop the run instead)")
    progress: bool = Field(True, description="show the progress line (reward, solve rate, KL, entropy, "
                           "length, loss, s/step) and the libraries' loading bars")
    log_with: list[str] = Field([], description="experiment trackers through accelerate, e.g. [tensorboard], "
                                "[wandb], [mlflow] (pip install 'duotune[tracking]'); logs in <run>/trackers")
    project: str = Field("duotune", description="tracker project name (wandb/mlflow project, tensorboard folder)")
    rollouts_every: int = Field(1, ge=0, description="write the step's sampled rows (prompt, completion, "
                                "rewards, advantage, is_demo) to rollouts/step-NNNNNN.jsonl every N steps "
                                "(0 = never)")
    keep_optimizer_state: bool = Field(False, description="keep the checkpoints' training state (optimizer "
                                       "moments, ~2x the model) and stage-<k>-init copies once the run has "
                                       "finished; by default they are deleted then (only a resume needs them; "
                                       "the models stay)")
    plots: bool = Field(True, description="write curves.png at the end")


class StageCfg(Cfg):
    method: RegistryName(METHODS) = Field(..., description="method of this stage")
    steps: int = Field(..., ge=1, description="training steps of this stage")
    algo: dict[str, Any] = Field({}, description="this stage's method settings (see `duotune list "
                                                 "method NAME`)")
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
    algo: Any = Field(default_factory=dict, description="the method's settings (losses, advantages, KL, "
                      "clip, coefficients): every key and default per method in `duotune list method "
                      "NAME` or `duotune train --help NAME`")
    optim: OptimCfg = Field(default_factory=OptimCfg, description="optimizer")
    compute: ComputeCfg = Field(default_factory=ComputeCfg, description="compute")
    lora: LoraCfg = Field(default_factory=LoraCfg, description="LoRA (peft) instead of full fine-tuning")
    eval: EvalCfg = Field(default_factory=EvalCfg, description="in-training evaluation")
    run: RunCfg = Field(default_factory=RunCfg, description="run folder, logging, checkpoints")
    stages: list[StageCfg] = Field([], description="pipeline: stages run in order, each from the "
                                                   "previous stage's weights (overrides method/steps)")

    @model_validator(mode="before")
    @classmethod
    def _method_settings(cls, data: Any) -> Any:
        """Validate `algo` (and each stage's) with its method's settings model, before anything else."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        stages = data.get("stages") or []
        if stages:
            if data.get("algo"):
                raise ConfigError("with `stages`, method settings go into each stage: stages[k].algo "
                                  "(the top-level `algo` would apply to stages of other methods)")
            for k, st in enumerate(stages):
                if isinstance(st, dict) and isinstance(st.get("method"), str) and st["method"] in METHODS:
                    settings_for(st["method"], st.get("algo"), where=f"stages[{k}].algo")
        method = data.get("method", "grpo")
        if isinstance(method, str) and method in METHODS:
            data["algo"] = settings_for(method, None if stages else data.get("algo"))
        return data

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
        data.update(method=st.method, steps=st.steps, stages=[], algo=st.algo)
        apply_overrides(data, [f"{key}={_yaml(v)}" for key, v in st.overrides.items()])
        out.append(build(TrainConfig, data, source=f"stages[{k}]"))
    return out


def _yaml(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")

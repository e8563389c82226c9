"""Each compared method's `TrainConfig`: its recipe, then the comparison's common overrides, data and
budget (pipelines: stage steps scaled to the budget in the recipe's proportions), then per-method
overrides; and the budget check that refuses any method whose budget differs, with the numbers.

Imports `duotune.trainers` (config only: no model is loaded) and `duotune.config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from duotune.analysis.compare_config import CompareConfig
from duotune.config import apply_overrides, build, read_yaml
from duotune.errors import ConfigError

BASE = "base"  # the untrained initial model: evaluated, never trained


def _yaml(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")


def _overrides(items: dict[str, Any]) -> list[str]:
    return [f"{k}={_yaml(v)}" for k, v in items.items()]


def scale_stages(steps: list[int], total: int) -> list[int]:
    """Stage steps in the recipe's proportions summing to `total` (largest remainders; each >= 1)."""
    if total < len(steps):
        raise ConfigError(f"budget.steps={total} is smaller than the {len(steps)} stages of a pipeline; "
                          "give at least one step per stage")
    spare = total - len(steps)  # every stage keeps one step; the rest is shared by proportion
    exact = [spare * s / sum(steps) for s in steps]
    out = [1 + int(e) for e in exact]
    order = sorted(range(len(steps)), key=lambda i: -(exact[i] - int(exact[i])))
    for i in order[:total - sum(out)]:
        out[i] += 1
    return out


def method_config(cfg: CompareConfig, method: str, train_path: str, seed: int, runs_dir: Path) -> Any:
    """The validated TrainConfig of `method` for `seed` (run folder <runs_dir>/<method>-s<seed>)."""
    from duotune.trainers import TrainConfig

    recipe = Path(cfg.recipes) / f"{method}.yaml"
    if not recipe.is_file():
        raise ConfigError(f"method {method!r} has no recipe {recipe}; add one or set `recipes` to a folder "
                          f"holding <method>.yaml files")
    data = read_yaml(recipe)
    apply_overrides(data, _overrides(cfg.common))
    b = cfg.budget
    apply_overrides(data, _overrides({
        "model": cfg.model, "data.train": train_path, "data.format": "auto",
        "data.limit": cfg.data.limit if cfg.data.file else None, "data.prompt_style": cfg.prompt_style,
        "steps": b.steps, "prompts_per_step": b.prompts_per_step, "rollout.group_size": b.samples_per_prompt,
        "num_iterations": b.updates_per_step}))
    # The budget's updates per step are whole-batch passes: recipes that split a rollout batch into
    # mini-batches (the SRFT/LUFFY release settings) are brought to one mini-batch per pass.
    for section in [data.get("algo")] + [st.get("algo") for st in data.get("stages") or []]:
        if isinstance(section, dict) and section.get("ppo_mini_batches", 1) != 1:
            section["ppo_mini_batches"] = 1
    apply_overrides(data, _overrides(cfg.per_method.get(method, {})))
    if data.get("stages"):  # after per_method: stages given there are proportions of the budget too
        for st, n in zip(data["stages"], scale_stages([int(s["steps"]) for s in data["stages"]], b.steps)):
            st["steps"] = n
    apply_overrides(data, _overrides({
        "run.output_dir": str(runs_dir), "run.name": f"{method}-s{seed}", "run.seed": seed,
        "run.resume": "auto", "run.save_every": 0, "run.keep_last": 1, "run.plots": False,
        "run.stop_after": None, "run.progress": cfg.progress, "eval.every": 0,
        "run.keep_optimizer_state": cfg.keep_optimizer_state}))
    return build(TrainConfig, data, source=f"{recipe} (compare {cfg.name})")


def budget_of(tcfg: Any) -> dict[str, Any]:
    """What a method spends: total steps, optimizer steps, and the per-stage prompts, group size, updates."""
    from duotune.trainers import METHODS, stage_configs

    stages = stage_configs(tcfg)
    return {
        "steps": sum(s.steps for s in stages),
        "optimizer_steps": sum(s.steps * s.num_iterations * s.algo.mini_batches() for s in stages),
        "stages": [{"method": s.method, "steps": s.steps, "prompts_per_step": s.prompts_per_step,
                    "updates_per_step": s.num_iterations * s.algo.mini_batches(),
                    "samples_per_prompt": s.rollout.group_size if METHODS.get(s.method).demo_entry.on_policy
                    else 1} for s in stages]}


def check_budgets(cfg: CompareConfig, budgets: dict[str, dict[str, Any]]) -> None:
    """Refuse the comparison when any method's budget differs from `cfg.budget`, showing every number."""
    b = cfg.budget
    want = f"{b.steps} steps x {b.prompts_per_step} prompts, G={b.samples_per_prompt}, " \
           f"{b.updates_per_step} update(s)/step = {b.steps * b.updates_per_step} optimizer steps"
    problems = []
    for method, got in budgets.items():
        bad = []
        if got["steps"] != b.steps:
            bad.append(f"{got['steps']} steps")
        if got["optimizer_steps"] != b.steps * b.updates_per_step:
            bad.append(f"{got['optimizer_steps']} optimizer steps")
        for k, st in enumerate(got["stages"]):
            where = f"stage {k} ({st['method']})" if len(got["stages"]) > 1 else st["method"]
            if st["prompts_per_step"] != b.prompts_per_step:
                bad.append(f"{where}: {st['prompts_per_step']} prompts/step")
            if st["samples_per_prompt"] not in (1, b.samples_per_prompt):
                bad.append(f"{where}: G={st['samples_per_prompt']}")
            if st["updates_per_step"] != b.updates_per_step:
                bad.append(f"{where}: {st['updates_per_step']} updates/step")
        if bad:
            problems.append(f"{method}: {', '.join(bad)}")
    if problems:
        raise ConfigError(f"methods with a different budget (budget: {want}): " + "; ".join(problems)
                          + ". Remove the budget keys from per_method / the recipes' stage overrides, "
                            "or change `budget` for every method")


def plan(cfg: CompareConfig, train_path: str, runs_dir: Path) -> dict[str, list[Any]]:
    """{method: [TrainConfig per seed]} for every trained method, budgets checked across methods."""
    configs = {m: [method_config(cfg, m, train_path, s, runs_dir) for s in cfg.seeds]
               for m in cfg.methods if m != BASE}
    check_budgets(cfg, {m: budget_of(c[0]) for m, c in configs.items()})
    return configs

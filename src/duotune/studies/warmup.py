"""Warm-up of a VLM on generated counting + geometry images (issue 7 item 2), saved as a reusable
checkpoint `<out>/warmup/final`, and the check that samplers suppress image placeholder tokens.

Two stages: (1) the random vision tower is pre-trained on exact scene counts (`duotune.studies.tower`,
`<out>/tower/final`); (2) SFT on <think>/<answer> demos with the projector in full and LoRA on the LM
and tower. Each stage is reused when its folder exists. `<out>/warmup/warmup_report.json` holds the
tower's held-out count accuracy, the held-out counting/geometry scores and the image-feature stats.

`python -m duotune.studies.warmup --scale cpu --out runs/vision`. Imports the studies' common
module, models and rollout; the training itself is `configs/vision/warmup_counting.yaml`.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from duotune.studies.common import (
    Scale,
    evaluate_examples,
    get_scale,
    load_split,
    run_recipe,
    write_mixture,
    write_split,
)
from duotune.studies.tower import ensure_tower, tower_path

WARMUP_SEED = 100  # its own item streams: the studies' train splits use seed 0, tests seed 1


def final_path(root: Path) -> Path:
    return Path(root) / "warmup" / "final"


def ensure_warmup(scale: Scale, root: Path) -> Path:
    """The warmed-up checkpoint under `root`, trained (and saved) first when it does not exist yet:
    stage 1 pre-trains the tower on scene counts (`<root>/tower/final`, when the scale asks for it),
    stage 2 is the SFT of `configs/vision/warmup_counting.yaml` from there."""
    final = final_path(root)
    if (final / "config.json").is_file():
        return final
    model = scale.model
    if scale.tower_steps:  # stage 1: the tower learns to see the shapes (studies.tower)
        model = str(ensure_tower(scale.model, root, images=scale.tower_images, steps=scale.tower_steps,
                                 lr=scale.tower_lr, progress=False))
    data = write_mixture([("counting", scale.warmup_items * 4 // 5), ("geometry", scale.warmup_items // 5)],
                         "train", Path(root) / "data" / "warmup", scale.image_size, WARMUP_SEED)
    result, seconds = run_recipe("warmup_counting", [
        f"model={model}", f"steps={scale.warmup_steps}", f"data.train={data}",
        f"optim.lr={scale.warmup_lr}", f"run.output_dir={root}", "run.name=warmup", "run.progress=false"])
    return save_final(result.checkpoint, final, seconds)


def save_final(checkpoint: Path, final: Path, seconds: float | None = None) -> Path:
    """Copy the trainer's last checkpoint model to `final` (the documented reusable location)."""
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(Path(checkpoint) / "model", tmp)
    (tmp / "warmup.json").write_text(json.dumps({"from": str(checkpoint), "train_seconds": seconds}) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def suppression_check(bundle: Any, examples: list[Any], max_new_tokens: int, seed: int = 0) -> dict[str, Any]:
    """Sample with and without `suppress_tokens=bundle.vision_token_ids` (same seed) and count the image
    placeholder tokens emitted; an unsuppressed completion holding one is scored by a training forward
    to show the failure it causes ("Image features and image tokens do not match")."""
    from duotune.rollout import HFSampler, SamplingParams, build_groups, collate
    from duotune.trainers.compute import batch_logprobs

    ids = set(bundle.vision_token_ids)
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=max_new_tokens, seed=seed)
    out: dict[str, Any] = {"placeholder_ids": sorted(ids)}
    for label, suppress in (("suppressed", sorted(ids)), ("unsuppressed", None)):
        sampler = HFSampler(bundle, batch_size=16, suppress_tokens=suppress)
        comps = [c for per in sampler.sample(examples, params) for c in per]
        out[label] = {"completions": len(comps),
                      "placeholders_emitted": sum(t in ids for c in comps for t in c.token_ids)}
        rollout = build_groups(sampler, sampler.encoder, examples, params, group_size=2,
                               demo_in_group=False, demo_rows=False, max_completion_length=max_new_tokens)
        try:
            batch_logprobs(bundle.model, sampler.encoder, collate(rollout, sampler.encoder), 1 << 16,
                           with_entropy=False)
            out[label]["training_forward"] = "ok"
        except (ValueError, RuntimeError) as err:
            out[label]["training_forward"] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
    return out


def image_feature_stats(bundle: Any, examples: list[Any]) -> dict[str, float]:
    """How readable the image tokens are to the LM, from the projected features of `examples`' images:
    their mean norm next to the text embeddings' (`feature_norm`, `text_embedding_norm`), and
    `patch_spread`, the mean over images of ||f_p - mean_p f|| / ||f_p|| over patches p. A spread near 0
    means every patch of an image reaches the LM as (almost) the same vector, so it cannot count: the
    collapse a from-scratch tower showed at a 1e-3 learning rate (README, vision studies)."""
    import torch

    from duotune.models.logprobs import unwrap_model
    from duotune.rollout.prompts import PromptEncoder

    model = unwrap_model(bundle.model)
    enc = PromptEncoder(bundle)
    norms, spreads = [], []
    with torch.no_grad():
        for ex in examples:
            pixels = enc.pixel_inputs(enc.encode(ex).images)["pixel_values"]
            for f in model.get_image_features(pixel_values=pixels).pooler_output:
                f = f.float().reshape(-1, f.shape[-1])
                norms.append(float(f.norm(dim=-1).mean()))
                spreads.append(float(((f - f.mean(0)).norm(dim=-1) / f.norm(dim=-1).clamp_min(1e-12)).mean()))
        text = model.get_input_embeddings().weight.float().norm(dim=-1).mean()
    return {"feature_norm": sum(norms) / len(norms), "text_embedding_norm": float(text),
            "patch_spread": sum(spreads) / len(spreads), "images": float(len(norms))}


def run(scale_name: str, out: Path, evaluate: bool = True) -> dict[str, Any]:
    """Warm up (or reuse) the checkpoint, check placeholder suppression on it and (with `evaluate`)
    score it on held-out counting and geometry (the OThink study's base row does the same)."""
    from duotune.models import load_model

    scale = get_scale(scale_name)
    final = ensure_warmup(scale, out)
    bundle = load_model(str(final))
    report: dict[str, Any] = {"checkpoint": str(final)}
    tower_json = tower_path(out) / "tower.json"
    if tower_json.is_file():
        history = json.loads(tower_json.read_text())
        report["tower"] = {k: history[k] for k in ("images", "steps", "lr", "before", "after", "seconds")}
    for task in ("counting", "geometry"):
        test = load_split(write_split(task, scale.test_items, "test", out / "data", scale.image_size),
                          "think_answer")
        if evaluate:
            report[task] = evaluate_examples(bundle, test, "accuracy_format", scale.eval_max_new_tokens,
                                             alpha=0.0)
    report["image_features"] = image_feature_stats(bundle, test[:16])
    report["suppression"] = suppression_check(bundle, test[:2], max_new_tokens=16)
    (out / "warmup" / "warmup_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m duotune.studies.warmup", description=__doc__)
    p.add_argument("--scale", default="cpu", help="tiny | cpu (see duotune.studies.common.SCALES)")
    p.add_argument("--out", default="runs/vision", help="root folder; the checkpoint is <out>/warmup/final")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    args = p.parse_args(argv)
    report = run(args.scale, Path(args.out), evaluate=not args.no_eval)
    print(json.dumps({k: v if not isinstance(v, dict) else {kk: vv for kk, vv in v.items() if kk != "samples"}
                      for k, v in report.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

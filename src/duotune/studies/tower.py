"""Stage 1 of the vision warm-up: pre-train a from-scratch CLIP tower to see the generated shapes.

Why a stage of its own: in the warm-up SFT the only gradient the tower gets comes through the LM's
next-token loss, where the image decides a handful of tokens of a long, mostly predictable demo. With
960 images that signal did not teach the tower anything (counting stayed at 6 %, README), and at a
higher learning rate the tower collapsed to one constant vector per patch. Here the tower is trained
directly on the generator's exact scenes instead, the way a CLIP tower is pre-trained before LLaVA
stage 1 (we cannot download one): the mean of its patch features (the layer the projector reads)
feeds linear heads that classify 24 counts of the scene (all items; per colour; per shape; per colour
and shape pair; 0-9 each). Images are rendered in memory from the counting task's train split on a
stream of their own ("tower"), so no test item is ever seen. Measured on this CPU (2 threads): the
held-out total-count accuracy of such a head reached 60 % after 600 steps of 64 images (2.5 min).

`pretrain_tower(bundle, ...)` trains `bundle`'s tower in place and returns its history;
`ensure_tower(...)` writes the whole VLM with the trained tower to `<root>/tower/final` (reused when
present; `tower.json` inside holds the history) and the loss curve to `<root>/tower/loss.png`; the
warm-up SFT starts there. Imports torch, tqdm, duotune.tasks, duotune.models and the plot helper.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from duotune.analysis.plots import line_plot
from duotune.errors import ConfigError
from duotune.models.logprobs import unwrap_model
from duotune.tasks.shapes import COLOURS, SHAPES

TOWER_SEED = 200
MAX_COUNT = 9  # counts are classified in 0..MAX_COUNT
HEADS = (["total"] + [f"colour:{c}" for c in COLOURS] + [f"shape:{s}" for s in SHAPES]
         + [f"{c} {s}" for c in COLOURS for s in SHAPES])


def counted_by(head: str, item: dict[str, Any]) -> bool:
    """Whether a scene item counts towards `head` ('total', 'colour:red', 'shape:circle', 'red circle')."""
    if head == "total":
        return True
    kind, _, value = head.partition(":")
    if value:
        return item[kind] == value
    colour, shape = head.split(" ")
    return item["colour"] == colour and item["shape"] == shape


def scene_counts(scene: list[dict[str, Any]]) -> list[int]:
    """The scene's count for every head in `HEADS` order (capped at MAX_COUNT)."""
    return [min(MAX_COUNT, sum(counted_by(h, item) for item in scene)) for h in HEADS]


def tower_data(n: int, seed: int, size: int, image_processor: Any, split: str = "train",
               batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` counting scenes (1-9 items) of `split` as (pixel_values [n, 3, H, W], counts [n, len(HEADS)])."""
    from duotune.tasks.base import draw_items, resolve_params

    params = resolve_params("counting", {"size": size, "variant": "total"})
    cands = draw_items("counting", n, seed, split, params, stream=f"tower-{split}")
    pixels = [image_processor(images=[c.render() for c in cands[i:i + batch]], return_tensors="pt")["pixel_values"]
              for i in range(0, n, batch)]
    return torch.cat(pixels), torch.tensor([scene_counts(c.row["scene"]) for c in cands])


def _tower(model: Any) -> Any:
    inner = unwrap_model(model)
    tower = getattr(getattr(inner, "model", inner), "vision_tower", None) or getattr(inner, "vision_tower", None)
    if tower is None:
        raise ConfigError(f"{type(inner).__name__} has no vision_tower to pre-train (a LLaVA-style VLM is needed)")
    return tower


def _pooled(tower: Any, pixels: torch.Tensor, layer: int) -> torch.Tensor:
    """Mean over patches (CLS dropped, as the projector's 'default' strategy does) of hidden state `layer`."""
    return tower(pixel_values=pixels, output_hidden_states=True).hidden_states[layer][:, 1:].mean(1)


def head_accuracy(tower: Any, head: torch.nn.Module, pixels: torch.Tensor, counts: torch.Tensor,
                  layer: int) -> dict[str, float]:
    """Held-out accuracy of the total-count head and the mean accuracy over all heads."""
    with torch.no_grad():
        z = torch.cat([_pooled(tower, pixels[i:i + 128], layer) for i in range(0, len(pixels), 128)])
        pred = head(z).view(len(z), len(HEADS), MAX_COUNT + 1).argmax(-1)
    hit = (pred == counts).float()
    return {"total_accuracy": float(hit[:, 0].mean()), "mean_head_accuracy": float(hit.mean())}


def pretrain_tower(bundle: Any, *, images: int, steps: int, lr: float, batch_size: int = 64,
                   test_images: int = 500, seed: int = TOWER_SEED, progress: bool = True) -> dict[str, Any]:
    """Train `bundle`'s vision tower in place on count classification (heads discarded afterwards).

    AdamW at `lr` with a cosine decay to 10 %, gradient clip 1.0, batches drawn with `seed` from
    `images` generated train scenes; returns the loss curve and held-out head accuracy before/after.
    """
    for name, value in (("images", images), ("steps", steps), ("batch_size", batch_size), ("test_images", test_images)):
        if value < 1:
            raise ConfigError(f"pretrain_tower: {name}={value} must be at least 1")
    tower = _tower(bundle.model)
    layer = getattr(unwrap_model(bundle.model).config, "vision_feature_layer", -1)
    size = max(64, tower.config.image_size)  # the counting task draws 64 px and up; the processor resizes
    proc = bundle.processor.image_processor
    t0 = time.perf_counter()
    x_train, y_train = tower_data(images, seed, size, proc, "train")
    x_test, y_test = tower_data(test_images, seed, size, proc, "test")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # the head's init depends on `seed` only, not on the caller
        torch.manual_seed(seed)
        head = torch.nn.Linear(tower.config.hidden_size, len(HEADS) * (MAX_COUNT + 1))
    tower.requires_grad_(True)
    tower.train()
    params = [*tower.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps)))
    history: dict[str, Any] = {"images": images, "steps": steps, "lr": lr, "batch_size": batch_size,
                               "heads": HEADS, "before": head_accuracy(tower, head, x_test, y_test, layer),
                               "loss": []}
    for _ in tqdm(range(steps), desc="tower pre-training", disable=not progress):
        idx = torch.randint(0, images, (batch_size,), generator=gen)
        logits = head(_pooled(tower, x_train[idx], layer)).view(-1, MAX_COUNT + 1)
        loss = F.cross_entropy(logits, y_train[idx].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        history["loss"].append(round(loss.item(), 5))
    tower.eval()
    history["after"] = head_accuracy(tower, head, x_test, y_test, layer)
    history["seconds"] = round(time.perf_counter() - t0, 1)
    return history


def tower_path(root: Path) -> Path:
    """Where `ensure_tower` keeps the model with the pre-trained tower (`tower.json` inside)."""
    return Path(root) / "tower" / "final"


def ensure_tower(model: str, root: Path, *, images: int, steps: int, lr: float, progress: bool = True) -> Path:
    """`<root>/tower/final`: `model` with its tower pre-trained (and `tower.json`, the history); made
    first when it does not exist yet. The folder is written beside and renamed, so it is whole or absent."""
    from duotune.models import load_model, save_model

    final = tower_path(root)
    if (final / "config.json").is_file():
        return final
    bundle = load_model(model)
    history = pretrain_tower(bundle, images=images, steps=steps, lr=lr, progress=progress)
    tmp = final.with_name("final.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(bundle, tmp)
    (tmp / "tower.json").write_text(json.dumps({"from": model, **history}) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    loss = history["loss"]
    line_plot({f"mean over {len(HEADS)} count heads": (list(range(1, len(loss) + 1)), loss)},
              f"tower pre-training; held-out total count {history['after']['total_accuracy']:.0%}",
              "step", "cross-entropy", final.parent / "loss.png")
    return final

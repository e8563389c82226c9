"""AdamW with constant / cosine / linear schedules and linear warm-up; data order; device and dtype.

Imports torch only (plus the trainer config for field names).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from duotune.trainers.config import OptimCfg


def build_optimizer(model: torch.nn.Module, cfg: OptimCfg, total_steps: int,
                    groups: list[dict[str, Any]] | None = None
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over trainable parameters (or the given param `groups`, each with its own lr) and a
    LambdaLR over `total_steps` optimizer steps that scales every group's lr alike."""
    params = groups if groups is not None else [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    warm = round(cfg.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def prompt_indices(n_rows: int, per_step: int, step: int, rank: int, world: int, seed: int,
                   shuffle: bool) -> list[int]:
    """Row indices for one step on one rank: a seeded permutation per epoch, read as a stream.

    A pure function of the step, so resuming at step k reads exactly the rows an uninterrupted
    run would (the data position is the step counter).
    """
    start = (step * world + rank) * per_step
    out = []
    for pos in range(start, start + per_step):
        epoch, offset = divmod(pos, n_rows)
        if shuffle:
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            out.append(int(torch.randperm(n_rows, generator=g)[offset]))
        else:
            out.append(offset)
    return out


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto: float32 on CPU (bf16 matmuls are slow there), bfloat16 on GPU."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]

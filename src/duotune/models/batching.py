"""Splitting a scoring batch into micro-batches: row groups under a token budget, and the matching
slices of the extra model inputs (pixel values, image grids, per-token type ids).

Imports torch and `duotune.errors` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from duotune.errors import ShapeError

# Per-image tensors (first dim = images, or image patches for Qwen-VL's pixel_values).
IMAGE_KEYS = ("pixel_values", "image_grid_thw", "image_sizes")
# Keys holding one value per token: they must match input_ids [N, L] exactly.
PER_TOKEN_SUFFIXES = ("token_type_ids", "_mask")


@dataclass
class MicroBatch:
    """Rows of the full batch (ascending) and the column window [start, stop) they need."""

    rows: torch.Tensor
    start: int
    stop: int


def plan_micro_batches(attention_mask: torch.Tensor, active: torch.Tensor, token_budget: int) -> list[MicroBatch]:
    """Group the `active` rows so each group's rows x (shared non-padding width) <= token_budget.

    Columns that are padding in every row of a group are trimmed from both ends. Rows are sorted
    by length first so similar rows share a group (little padding). A single row wider than the
    budget forms its own group (the budget bounds grouping, it never splits a sequence).
    """
    am = attention_mask.bool()
    width = am.shape[1]
    first = am.float().argmax(1)
    last = width - 1 - am.flip(1).float().argmax(1)
    rows = torch.nonzero(active & am.any(1)).flatten().tolist()
    rows.sort(key=lambda i: (int(last[i] - first[i]), i), reverse=True)
    plans: list[MicroBatch] = []
    group: list[int] = []
    lo = hi = 0
    for i in rows:
        f, l_ = int(first[i]), int(last[i])
        new_lo, new_hi = (min(lo, f), max(hi, l_)) if group else (f, l_)
        if group and (len(group) + 1) * (new_hi - new_lo + 1) > token_budget:
            plans.append(MicroBatch(torch.tensor(sorted(group)), lo, hi + 1))
            group, (new_lo, new_hi) = [], (f, l_)
        group.append(i)
        lo, hi = new_lo, new_hi
    if group:
        plans.append(MicroBatch(torch.tensor(sorted(group)), lo, hi + 1))
    return plans


class ExtraInputs:
    """Slices `extra_inputs` for any subset of rows and column window.

    Assumption (documented contract): images appear in row order, and within a row in the order
    of their placeholder tokens, exactly as a processor emits them for a batch, each row holding
    its own list. Qwen-VL `pixel_values` concatenate every image's patches (image k has
    prod(image_grid_thw[k]) rows); other models stack one tensor per image. Tensors shaped [N, L]
    like `input_ids` are cut by rows and columns, other [N, ...] tensors by rows.
    """

    def __init__(self, config: Any, input_ids: torch.Tensor, extra: dict[str, Any]):
        self.shape = tuple(input_ids.shape)
        self.extra = extra
        self.image_keys = [k for k in IMAGE_KEYS if k in extra]
        if "pixel_values_videos" in extra or "video_grid_thw" in extra:
            raise ShapeError("compute_logprobs: video inputs are not supported; pass images only")
        for key, value in extra.items():
            if not torch.is_tensor(value) or key in self.image_keys:
                continue
            if key.endswith(PER_TOKEN_SUFFIXES) and tuple(value.shape) != self.shape:
                raise ShapeError(f"extra_inputs[{key!r}] has shape {tuple(value.shape)}; expected the "
                                 f"shape of input_ids {self.shape} (one value per token)")
            if value.shape[:1] != self.shape[:1]:
                raise ShapeError(f"extra_inputs[{key!r}] has shape {tuple(value.shape)}; expected "
                                 f"[N={self.shape[0]}, ...] (one entry per row) or a per-image key "
                                 f"({', '.join(IMAGE_KEYS)})")
        self.row_images: list[tuple[int, int]] = []  # images [start, stop) of each row
        self.spans: dict[str, list[tuple[int, int]]] = {}
        if self.image_keys:
            self._assign_images(config, input_ids)

    def _assign_images(self, config: Any, input_ids: torch.Tensor) -> None:
        token_id = image_token_id(config)
        if token_id is None:
            raise ShapeError(f"extra_inputs has {self.image_keys} but the model config names no image token")
        counts = (input_ids == token_id).sum(1).tolist()
        if "image_grid_thw" in self.extra:
            grid = self.extra["image_grid_thw"].long()
            merge = int(config.vision_config.spatial_merge_size)
            per_image = (grid.prod(-1) // merge**2).tolist()
            patches = grid.prod(-1).tolist()
        else:
            n_images = int(self.extra[self.image_keys[0]].shape[0])
            total = sum(counts)
            if n_images == 0 or total % n_images:
                raise ShapeError(f"extra_inputs hold {n_images} images but input_ids has {total} image "
                                 "tokens, not a multiple; give each row its images in order")
            per_image, patches = [total // n_images] * n_images, [1] * n_images
        offsets = [0]
        for p in patches:
            offsets.append(offsets[-1] + p)
        k = 0
        for row, need in enumerate(counts):
            start, got = k, 0
            while got < need and k < len(per_image):
                got += per_image[k]
                k += 1
            if got != need:
                raise ShapeError(f"row {row} of input_ids has {need} image tokens but its images in order "
                                 f"provide {got}; give each row its images in order (extra_inputs)")
            self.row_images.append((start, k))
        if k != len(per_image):
            raise ShapeError(f"extra_inputs hold {len(per_image)} images but input_ids place only {k}")
        # Rows of each per-image tensor that belong to image k (pixel_values: its patches).
        self.spans = {key: [(k, k + 1) for k in range(len(per_image))] for key in self.image_keys}
        self.spans["pixel_values"] = [(offsets[k], offsets[k + 1]) for k in range(len(per_image))]

    def take(self, rows: torch.Tensor, start: int, stop: int) -> dict[str, Any]:
        """The extra inputs of `rows` (in that order) for columns [start, stop)."""
        out: dict[str, Any] = {}
        images = [k for r in rows.tolist() for k in range(*self.row_images[r])] if self.image_keys else []
        for key, value in self.extra.items():
            if key in self.image_keys:
                if images:
                    out[key] = torch.cat([value[slice(*self.spans[key][k])] for k in images])
            elif not torch.is_tensor(value):
                out[key] = value
            elif tuple(value.shape[:2]) == self.shape:
                out[key] = value[rows.to(value.device), start:stop]
            else:
                out[key] = value[rows.to(value.device)]
        return out


def image_token_id(config: Any) -> int | None:
    """The image placeholder id of a VLM config (Qwen: image_token_id; LLaVA: image_token_index)."""
    for attr in ("image_token_id", "image_token_index"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    return None

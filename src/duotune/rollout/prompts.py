"""Prompt and response encoding shared by sampling and training collation (text and VLM alike).

A prompt is rendered with the chat template of the tokenizer (text) or the processor (VLM, which
also expands image placeholders), so the ids the sampler conditions on are exactly the ids the
trainer scores. Imports torch and `duotune.data`; never trainers, algos or rewards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from duotune.data import Example, load_image, render_chat
from duotune.errors import DataError


@dataclass
class EncodedPrompt:
    """A rendered prompt: token ids (image placeholders expanded), the PIL images it shows, and
    any other per-token ids the processor returns (e.g. Qwen2-VL's `mm_token_type_ids`, which its
    M-RoPE needs; response tokens get 0 there)."""

    input_ids: list[int]
    images: list[Any] = field(default_factory=list)
    token_fields: dict[str, list[int]] = field(default_factory=dict)


class PromptEncoder:
    """Renders `Example` prompts and demo responses into token ids for one model bundle."""

    def __init__(self, bundle: Any):
        self.bundle = bundle
        self.processor = bundle.processor if getattr(bundle, "is_vlm", False) else None
        self.tokenizer = bundle.tokenizer or getattr(bundle.processor, "tokenizer", None)
        self.eos_ids: list[int] = bundle.eos_ids
        self.pad_id: int = bundle.pad_id

    def render(self, example: Example) -> str:
        """The prompt text with the generation prompt appended (the assistant turn is left open)."""
        return render_chat(self.processor if self.processor is not None else self.tokenizer,
                           example.prompt, add_generation_prompt=True)

    def encode(self, example: Example) -> EncodedPrompt:
        text = self.render(example)
        if self.processor is None:
            if example.images:
                raise DataError(f"example {example.id!r} has images but model {self.bundle.name!r} "
                                "is text-only; use a VLM or drop the image column", field="images")
            return EncodedPrompt(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        images = [load_image(im) for im in example.images]
        enc = self.processor(text=[text], images=images or None, return_tensors="pt")
        ids = enc["input_ids"][0].tolist()
        fields = {k: v[0].tolist() for k, v in enc.items() if k not in ("input_ids", "attention_mask")
                  and torch.is_tensor(v) and v.dim() == 2 and v.shape[1] == len(ids)}
        return EncodedPrompt(ids, images, fields)

    def encode_response(self, text: str, max_tokens: int) -> tuple[list[int], bool]:
        """A demonstration as the assistant turn: its ids + EOS, cut to max_tokens.

        Returns (ids, truncated). The EOS is the generation stop token, so a demo ends the way a
        sampled completion does (LUFFY/SRFT put the demo into the rollout group; SPEC 5).
        """
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.eos_ids[0]]
        return (ids[:max_tokens], True) if len(ids) > max_tokens else (ids, False)

    def pixel_inputs(self, images: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Vision inputs for a list of images (in row order), rebuilt per micro-batch by the processor."""
        if self.processor is None or not images:
            return {}
        return dict(self.processor.image_processor(images=list(images), return_tensors="pt"))

    def batch(self, prompts: Sequence[EncodedPrompt], padding_side: str = "left") -> dict[str, Any]:
        """Pad prompt ids into input_ids/attention_mask [B, L] plus the images' pixel inputs."""
        ids = [p.input_ids for p in prompts]
        input_ids, attn = pad(ids, self.pad_id, padding_side)
        out: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attn}
        for key in prompts[0].token_fields:
            out[key] = pad([p.token_fields[key] for p in prompts], 0, padding_side)[0]
        out.update(self.pixel_inputs([im for p in prompts for im in p.images]))
        return out


def pad(seqs: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id lists to [B, L] on `side`; returns (ids, attention mask)."""
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(length - len(s), length) if side == "left" else slice(0, len(s))
        ids[i, sl] = torch.tensor(list(s), dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask

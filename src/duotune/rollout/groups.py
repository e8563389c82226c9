"""Group construction (G samples per prompt, optional demo member or demo rows) and collation to tensors.

Rows are in group order: group b holds rows b*G .. b*G+G-1; demo rows that are not group members
(a separate SFT batch) follow with group id -1. Imports torch, `duotune.data` and the rollout
modules only; rewards and losses are the trainer's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from duotune.data import Example
from duotune.errors import DataError
from duotune.rollout.prompts import EncodedPrompt, PromptEncoder, pad
from duotune.rollout.sampler import Sampler, SamplingParams


@dataclass
class Rollout:
    """One step's sequences: per-row response ids/text, group id, demo flag, truncation flag."""

    examples: list[Example]
    prompts: list[EncodedPrompt]
    group_size: int
    group_ids: list[int] = field(default_factory=list)
    responses: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    is_demo: list[bool] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    source: list[int] = field(default_factory=list)  # index into examples/prompts per row
    reward_components: dict[str, list[Any]] = field(default_factory=dict)  # per reward, set when scored

    def add(self, src: int, group: int, ids: list[int], text: str, demo: bool, truncated: bool) -> None:
        self.source.append(src)
        self.group_ids.append(group)
        self.responses.append(ids)
        self.texts.append(text)
        self.is_demo.append(demo)
        self.truncated.append(truncated)

    def columns(self) -> dict[str, list[Any]]:
        """Per-row reward columns, aligned with `texts`, as TRL's GRPOTrainer passes them: every dataset
        column, `prompts` (each row's chat messages) and `completion_ids` (its response token ids)."""
        cols = [self.examples[s].columns() for s in self.source]
        keys = sorted({k for c in cols for k in c})
        out = {k: [c.get(k) for c in cols] for k in keys}
        out.update(prompts=[self.examples[s].prompt for s in self.source],
                   completion_ids=[list(r) for r in self.responses])
        return out


def _demo_ids(encoder: PromptEncoder, ex: Example, max_len: int) -> tuple[list[int], bool]:
    if not ex.demo:
        raise DataError(f"example {ex.id!r} has no demonstration; this method puts the demo into the "
                        "step, so every training row needs a `demo` (solution/target) column",
                        field="demo")
    return encoder.encode_response(ex.demo, max_len)


def build_groups(sampler: Sampler | None, encoder: PromptEncoder, examples: Sequence[Example],
                 params: SamplingParams | None, *, group_size: int, demo_in_group: bool,
                 demo_rows: bool, max_completion_length: int) -> Rollout:
    """Sample the step's sequences.

    group_size G: members per prompt; with demo_in_group one of them is the prompt's demo (LUFFY,
    SRFT: G-1 rollouts + 1 demonstration in one group; SPEC 5), scored by the same reward.
    demo_rows: append each prompt's demo as a row outside every group (SFT, RL + SFT loss; SPEC 7).
    Demos are the assistant turn + EOS, truncated to max_completion_length.
    """
    examples = list(examples)
    out = Rollout(examples, [encoder.encode(ex) for ex in examples], group_size)  # the step's one encoding
    n_sampled = group_size - int(demo_in_group)
    samples: list[list[Any]] = [[] for _ in examples]
    if group_size > 0 and n_sampled > 0:
        if sampler is None or params is None:
            raise ValueError("build_groups needs a sampler and params when rollouts are requested")
        samples = sampler.generate(out.prompts, SamplingParams(
            n=n_sampled, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
            max_new_tokens=max_completion_length, seed=params.seed))
    for b, ex in enumerate(examples):
        if group_size == 0:
            break
        for comp in samples[b]:
            out.add(b, b, list(comp.token_ids), comp.text, False, comp.finish_reason == "length")
        if demo_in_group:
            ids, cut = _demo_ids(encoder, ex, max_completion_length)
            out.add(b, b, ids, encoder.tokenizer.decode(ids, skip_special_tokens=True), True, cut)
    if demo_rows:
        for b, ex in enumerate(examples):
            ids, cut = _demo_ids(encoder, ex, max_completion_length)
            out.add(b, -1, ids, encoder.tokenizer.decode(ids, skip_special_tokens=True), True, cut)
    return out


@dataclass
class CollatedBatch:
    """Tensors for N rows. Full sequences are [N, L] (prompt + response, right padded); response-
    aligned tensors are [N, T], T = longest response, with `resp_pos[i, t]` the position of response
    token t of row i in the full sequence (so `logp_full.gather(1, resp_pos)` aligns it)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor
    resp_pos: torch.Tensor
    response_mask: torch.Tensor
    demo_mask: torch.Tensor
    is_demo: torch.Tensor
    group_ids: torch.Tensor
    truncated: torch.Tensor
    images: list[list[Any]]
    token_fields: dict[str, torch.Tensor] = field(default_factory=dict)  # [N, L] processor ids
    prompt_index: torch.Tensor | None = None  # [N] which prompt each row continues (equal = same prompt)

    @property
    def num_rows(self) -> int:
        return int(self.input_ids.shape[0])

    def row_lengths(self) -> torch.Tensor:
        return self.attention_mask.sum(-1)

    def select(self, rows: torch.Tensor) -> CollatedBatch:
        """The sub-batch of `rows` with full-sequence padding trimmed to its own longest row."""
        length = int(self.attention_mask[rows].sum(-1).max())
        return CollatedBatch(
            self.input_ids[rows, :length], self.attention_mask[rows, :length],
            self.loss_mask[rows, :length], self.resp_pos[rows].clamp(max=length - 1),
            self.response_mask[rows], self.demo_mask[rows], self.is_demo[rows], self.group_ids[rows],
            self.truncated[rows], [self.images[int(r)] for r in rows],
            {k: v[rows, :length] for k, v in self.token_fields.items()},
            None if self.prompt_index is None else self.prompt_index[rows])


def collate(rollout: Rollout, encoder: PromptEncoder) -> CollatedBatch:
    """Prompt + response rows as right-padded tensors with response and demo masks."""
    if not rollout.responses:
        raise ValueError("cannot collate an empty rollout")
    prompt_ids = [rollout.prompts[s].input_ids for s in rollout.source]
    full = [p + r for p, r in zip(prompt_ids, rollout.responses)]
    input_ids, attn = pad(full, encoder.pad_id, "right")
    n, length = input_ids.shape
    t_max = max(1, max(len(r) for r in rollout.responses))
    starts = torch.tensor([len(p) for p in prompt_ids])
    lens = torch.tensor([len(r) for r in rollout.responses])
    t = torch.arange(t_max)
    response_mask = (t[None, :] < lens[:, None]).float()
    resp_pos = (starts[:, None] + t[None, :]).clamp(max=length - 1)
    pos = torch.arange(length)[None, :]
    loss_mask = ((pos >= starts[:, None]) & (pos < (starts + lens)[:, None])).long()
    is_demo = torch.tensor(rollout.is_demo, dtype=torch.bool)
    fields = {key: pad([rollout.prompts[s].token_fields[key] + [0] * len(r)
                        for s, r in zip(rollout.source, rollout.responses)], 0, "right")[0]
              for key in rollout.prompts[0].token_fields}
    return CollatedBatch(
        input_ids, attn, loss_mask, resp_pos, response_mask, response_mask * is_demo[:, None].float(),
        is_demo, torch.tensor(rollout.group_ids, dtype=torch.long),
        torch.tensor(rollout.truncated, dtype=torch.bool),
        [rollout.prompts[s].images for s in rollout.source], fields,
        torch.tensor(rollout.source, dtype=torch.long))

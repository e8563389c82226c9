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
from duotune.rollout.prefix import PrefixPlan, check_plan, sample_prefixed
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
    logprobs: list[list[float] | None] = field(default_factory=list)  # the sampler's, per token (None: demo)
    n_expert: int = 0  # the last n examples are a separate draw of demos (expert rows), not step prompts
    # Expert-prefix rows (demo_entry `prefix`): how many leading response tokens are the demo's
    # (off-policy, not sampled); 0 for sampled rollouts and demos.
    prefix_lens: list[int] = field(default_factory=list)
    reward_components: dict[str, list[Any]] = field(default_factory=dict)  # per reward, set when scored

    def add(self, src: int, group: int, ids: list[int], text: str, demo: bool, truncated: bool,
            logprobs: list[float] | None = None, prefix_len: int = 0) -> None:
        self.prefix_lens.append(prefix_len)
        self.logprobs.append(logprobs)
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

    def off_policy(self) -> list[bool]:
        """Per row: a demo or an expert-prefix row (not the policy's own sample from the prompt)."""
        return [d or p > 0 for d, p in zip(self.is_demo, self.prefix_lens)]

    def take(self, keep: Sequence[int]) -> Rollout:
        """The rows of the prompts `keep` (indices into `examples`), renumbered 0..len(keep)-1 in
        that order (a prompt's group and its demo rows move together)."""
        new = {old: i for i, old in enumerate(keep)}
        out = Rollout([self.examples[i] for i in keep], [self.prompts[i] for i in keep], self.group_size)
        rows = [r for r, src in enumerate(self.source) if src in new]
        for r in rows:
            g = self.group_ids[r]
            out.add(new[self.source[r]], new[g] if g >= 0 else -1, self.responses[r], self.texts[r],
                    self.is_demo[r], self.truncated[r], self.logprobs[r], self.prefix_lens[r])
        out.reward_components = {k: [v[r] for r in rows] for k, v in self.reward_components.items()}
        return out

    @staticmethod
    def join(parts: Sequence[Rollout]) -> Rollout:
        """One rollout of `parts` in order (same group size), prompts renumbered after each other."""
        out = Rollout([], [], parts[0].group_size)
        for part in parts:
            if part.group_size != out.group_size:
                raise ValueError(f"cannot join rollouts of group size {part.group_size} and {out.group_size}")
            base = len(out.examples)
            out.examples += part.examples
            out.prompts += part.prompts
            for r, src in enumerate(part.source):
                g = part.group_ids[r]
                out.add(base + src, base + g if g >= 0 else -1, part.responses[r], part.texts[r],
                        part.is_demo[r], part.truncated[r], part.logprobs[r], part.prefix_lens[r])
        keys = set(parts[0].reward_components)
        if all(set(p.reward_components) == keys and p.reward_components for p in parts):
            out.reward_components = {k: [v for p in parts for v in p.reward_components[k]] for k in keys}
        return out


def _demo_ids(encoder: PromptEncoder, ex: Example, max_len: int) -> tuple[list[int], bool]:
    if not ex.demo:
        raise DataError(f"example {ex.id!r} has no demonstration; this method puts the demo into the "
                        "step, so every training row needs a `demo` (solution/target) column",
                        field="demo")
    return encoder.encode_response(ex.demo, max_len)


def build_groups(sampler: Sampler | None, encoder: PromptEncoder, examples: Sequence[Example],
                 params: SamplingParams | None, *, group_size: int, demo_in_group: bool,
                 demo_rows: bool, max_completion_length: int, expert_demos: Sequence[Example] = (),
                 prefix: PrefixPlan | None = None) -> Rollout:
    """Sample the step's sequences.

    group_size G: members per prompt; with demo_in_group one of them is the prompt's demo (LUFFY,
    SRFT: G-1 rollouts + 1 demonstration in one group; SPEC 5), scored by the same reward.
    demo_rows: append each prompt's demo as a row outside every group (SFT, RL + SFT loss; SPEC 7).
    expert_demos: examples whose demos are appended as rows outside every group, after the step's
    prompts (CHORD's expert batch: a separate draw, not the step's prompts' demos).
    Demos are the assistant turn + EOS, truncated to max_completion_length.
    prefix: expert-prefix rows (UFT, Prefix-RFT, TRAPO) after the sampled ones in each group, their
    response = demo prefix + the policy's continuation (`rollout.prefix.sample_prefixed`).
    """
    experts = list(expert_demos)
    examples = list(examples)
    encoded = [encoder.encode(ex) for ex in examples + experts]  # the step's one encoding
    n_sampled = group_size - int(demo_in_group)
    if prefix is not None:
        n_sampled = check_plan(prefix, group_size, demo_in_group)
        group_size = n_sampled + prefix.rows + int(demo_in_group)
    out = Rollout(examples + experts, encoded, group_size, n_expert=len(experts))
    samples: list[list[Any]] = [[] for _ in examples]
    if group_size > 0 and (n_sampled > 0 or prefix is not None) and (sampler is None or params is None):
        raise ValueError("build_groups needs a sampler and params when rollouts are requested")
    if group_size > 0 and n_sampled > 0:
        samples = sampler.generate(out.prompts[:len(examples)], SamplingParams(
            n=n_sampled, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
            max_new_tokens=max_completion_length, seed=params.seed))
    hybrid: list[list[Any]] = [[] for _ in examples]
    if prefix is not None:
        hybrid = sample_prefixed(sampler, encoded[:len(examples)], prefix, params, max_completion_length)
    for b, ex in enumerate(examples):
        if group_size == 0:
            break
        for comp in samples[b]:
            out.add(b, b, list(comp.token_ids), comp.text, False, comp.finish_reason == "length", comp.logprobs)
        for h in hybrid[b]:
            out.add(b, b, h.ids, encoder.tokenizer.decode(h.ids, skip_special_tokens=True), False, h.truncated,
                    h.logprobs, h.prefix_len)
        if demo_in_group:
            ids, cut = _demo_ids(encoder, ex, max_completion_length)
            out.add(b, b, ids, encoder.tokenizer.decode(ids, skip_special_tokens=True), True, cut)
    if demo_rows:
        for b, ex in enumerate(examples):
            ids, cut = _demo_ids(encoder, ex, max_completion_length)
            out.add(b, -1, ids, encoder.tokenizer.decode(ids, skip_special_tokens=True), True, cut)
    for j, ex in enumerate(experts):
        ids, cut = _demo_ids(encoder, ex, max_completion_length)
        out.add(len(examples) + j, -1, ids, encoder.tokenizer.decode(ids, skip_special_tokens=True), True, cut)
    return out


@dataclass
class CollatedBatch:
    """Tensors for N rows. Full sequences are [N, L] (prompt + response, right padded); response-
    aligned tensors are [N, T], T = longest response, with `resp_pos[i, t]` the position of response
    token t of row i in the full sequence (so `logp_full.gather(1, resp_pos)` aligns it).
    `rollout_logp` [N, T]: the sampling engine's log-probs of the sampled tokens (vLLM), 0 on demo
    rows and padding; None when the engine reports none (HF sampler, SFT)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor
    resp_pos: torch.Tensor
    response_mask: torch.Tensor
    demo_mask: torch.Tensor       # [N, T] off-policy tokens: demo rows and expert prefixes
    is_demo: torch.Tensor
    group_ids: torch.Tensor
    truncated: torch.Tensor
    images: list[list[Any]]
    token_fields: dict[str, torch.Tensor] = field(default_factory=dict)  # [N, L] processor ids
    prompt_index: torch.Tensor | None = None  # [N] which prompt each row continues (equal = same prompt)
    # Filled by the trainer once the rows are scored, so one record carries the step through.
    rewards: torch.Tensor | None = None      # [N] total reward
    correct: torch.Tensor | None = None      # [N] bool: solved by the accuracy part of the reward
    advantages: torch.Tensor | None = None   # [N]
    # [N, T] log-probs of the sampled tokens under the sampler (0 on demo rows); None when the
    # sampler reported none. Response-aligned like response_mask.
    rollout_logp: torch.Tensor | None = None

    ROW_FIELDS = ("response_mask", "demo_mask", "is_demo", "group_ids", "truncated", "prompt_index",
                  "rewards", "correct", "advantages", "rollout_logp")

    @property
    def num_rows(self) -> int:
        return int(self.input_ids.shape[0])

    def row_lengths(self) -> torch.Tensor:
        return self.attention_mask.sum(-1)

    def select(self, rows: torch.Tensor) -> CollatedBatch:
        """The sub-batch of `rows` with full-sequence padding trimmed to its own longest row."""
        length = int(self.attention_mask[rows].sum(-1).max())
        per_row = {k: None if getattr(self, k) is None else getattr(self, k)[rows] for k in self.ROW_FIELDS}
        return CollatedBatch(
            self.input_ids[rows, :length], self.attention_mask[rows, :length],
            self.loss_mask[rows, :length], self.resp_pos[rows].clamp(max=length - 1),
            images=[self.images[int(r)] for r in rows],
            token_fields={k: v[rows, :length] for k, v in self.token_fields.items()}, **per_row)

    def to(self, device: torch.device) -> CollatedBatch:
        """The same rows with every tensor on `device` (a no-op when they are there already)."""
        if self.input_ids.device == device:
            return self
        moved = {k: v.to(device) if torch.is_tensor(v) else v for k, v in vars(self).items()
                 if k not in ("images", "token_fields")}
        return CollatedBatch(**moved, images=self.images,
                             token_fields={k: v.to(device) for k, v in self.token_fields.items()})


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
    # Off-policy tokens: whole demo rows, and the demo prefix of expert-prefix rows.
    prefix = t[None, :] < torch.tensor(rollout.prefix_lens)[:, None]
    demo_mask = response_mask * (is_demo[:, None] | prefix).float()
    return CollatedBatch(
        input_ids, attn, loss_mask, resp_pos, response_mask, demo_mask,
        is_demo, torch.tensor(rollout.group_ids, dtype=torch.long),
        torch.tensor(rollout.truncated, dtype=torch.bool),
        [rollout.prompts[s].images for s in rollout.source], fields,
        torch.tensor(rollout.source, dtype=torch.long), rollout_logp=_rollout_logp(rollout, t_max))


def _rollout_logp(rollout: Rollout, t_max: int) -> torch.Tensor | None:
    """[N, T] sampler log-probs, response-aligned (0 where a row has none), or None if no row has any."""
    if all(lp is None for lp in rollout.logprobs):
        return None
    out = torch.zeros(len(rollout.responses), t_max)
    for i, (lp, ids) in enumerate(zip(rollout.logprobs, rollout.responses)):
        if lp is not None:
            if len(lp) != len(ids):
                raise ValueError(f"row {i}: {len(lp)} sampler log-probs for {len(ids)} sampled tokens")
            out[i, :len(lp)] = torch.tensor(lp, dtype=torch.float32)
    return out

"""Expert-prefix rows (demo_entry `prefix`: UFT, Prefix-RFT, TRAPO): the policy continues a prompt
whose assistant turn already starts with the first tokens of its demonstration.

The prompt + prefix is one `EncodedPrompt`, so a sampler with a shared prefill (HFSampler) runs it
once and samples every continuation from its KV cache. Also the demo splits the plans are made
of (token prefixes, UFT's <= 5 solution segments). Imports `duotune.rollout` siblings only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from duotune.errors import ConfigError
from duotune.rollout.prompts import EncodedPrompt, PromptEncoder
from duotune.rollout.sampler import Sampler, SamplingParams

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class PrefixPlan:
    """A step's expert-prefix rows: per prompt `rows` hybrid rows continuing `tokens[b]` (the prompt's
    demo prefix; empty = plain rollouts). `replace`: they take the place of `rows` of the G sampled
    rollouts (a group stays G rows); else they join the group (G + rows)."""

    rows: int
    replace: bool
    tokens: list[list[int]]


@dataclass(frozen=True)
class PrefixedSample:
    """One hybrid row: prefix + continuation ids, whether it ended without EOS, the sampler's log-probs
    (0 on the prefix, which was not sampled) and the prefix length."""

    ids: list[int]
    truncated: bool
    logprobs: list[float]
    prefix_len: int


def sample_prefixed(sampler: Sampler, prompts: Sequence[EncodedPrompt], plan: PrefixPlan,
                    params: SamplingParams, max_completion_length: int) -> list[list[PrefixedSample]]:
    """`plan.rows` continuations per prompt of prompt + prefix; prefix + continuation fit in
    max_completion_length (a prefix keeps at least one token of room for the policy).

    One `generate` call for every prompt at the longest room; a continuation longer than its own
    room is cut there and counts as truncated (the same distribution as stopping it at its room)."""
    if len(plan.tokens) != len(prompts):
        raise ValueError(f"prefix plan has {len(plan.tokens)} prefixes for {len(prompts)} prompts")
    cut = [list(t[:max_completion_length - 1]) for t in plan.tokens]
    extended = [EncodedPrompt(p.input_ids + c, p.images, {k: v + [0] * len(c) for k, v in p.token_fields.items()})
                for p, c in zip(prompts, cut)]
    room = max_completion_length - min(len(c) for c in cut)
    comps = sampler.generate(extended, SamplingParams(
        n=plan.rows, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
        max_new_tokens=room, seed=None if params.seed is None else params.seed + 1))
    out = []
    for c, per in zip(cut, comps):
        mine = max_completion_length - len(c)
        rows = []
        for comp in per:
            cont = list(comp.token_ids)[:mine]
            lps = list(comp.logprobs or [0.0] * len(comp.token_ids))[:mine]
            truncated = comp.finish_reason == "length" or len(comp.token_ids) > mine
            rows.append(PrefixedSample(c + cont, truncated, [0.0] * len(c) + lps, len(c)))
        out.append(rows)
    return out


def check_plan(plan: PrefixPlan, group_size: int, demo_in_group: bool) -> int:
    """Sampled rollouts per group besides the hybrid rows; a ConfigError when `rows` does not fit."""
    if plan.rows < 1:
        raise ConfigError(f"prefix rows must be >= 1 (got {plan.rows})")
    plain = group_size - int(demo_in_group) - (plan.rows if plan.replace else 0)
    if plain < 0:
        raise ConfigError(f"algo.prefix.rows={plan.rows} replaces more rows than the group has "
                          f"(rollout.group_size={group_size}); lower prefix.rows or raise group_size")
    return plain


# ------------------------------------------------------------------ how demos are cut

def demo_tokens(encoder: PromptEncoder, text: str) -> list[int]:
    """The demonstration's ids as the assistant turn, without the closing EOS (a prefix never ends it)."""
    return list(encoder.tokenizer(text, add_special_tokens=False)["input_ids"])


def token_prefix(ids: Sequence[int], fraction: float) -> list[int]:
    """The first round(fraction * len(ids)) tokens (Prefix-RFT, TRAPO: a share of the demo's tokens)."""
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"prefix fraction must be in [0, 1] (got {fraction})")
    return list(ids[:round(fraction * len(ids))])


def solution_steps(text: str) -> list[str]:
    """A worked solution as steps whose concatenation is the text: its lines, or its sentences when it
    is one line (UFT's hints are lists of solution steps)."""
    lines = text.splitlines(keepends=True)
    if len(lines) > 1:
        return lines
    # sentences, each keeping the whitespace after it, so "".join(steps) == text
    cuts = [0] + [m.end() for m in _SENTENCE_END.finditer(text)] + [len(text)]
    return [text[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]


def segment_bounds(n_steps: int, max_segments: int) -> list[int]:
    """UFT's split of n steps into num = min(max_segments, n) segments: step counts 0 = s_0 < ... <
    s_num = n with s_i = round(i / num * n) (UFT's rl_dataset.py); hint k ends at step s_k."""
    if n_steps == 0:
        return [0]
    num = min(max_segments, n_steps)
    bounds = [round(i / num * n_steps) for i in range(num + 1)]
    bounds[-1] = n_steps
    return bounds

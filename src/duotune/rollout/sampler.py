"""Samplers: turn encoded prompts into n completions each (HF `generate` here; vLLM in `rollout.vllm`).

Prompt rendering (chat template through the tokenizer or the VLM processor) lives in `rollout.prompts`;
samplers take the `EncodedPrompt`s the trainer collates, so a prompt is encoded once per step and
sampling and training see identical ids. Imports torch, transformers (via the
bundle) and `duotune.data`; never imports trainers, algos or rewards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from duotune.data import Example
from duotune.errors import ConfigError
from duotune.models.logprobs import cache_kwarg, output_cache
from duotune.rollout.prompts import EncodedPrompt, PromptEncoder


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: n completions per prompt; temperature 0 means greedy decoding.

    top_k None (or 0) and top_p 1.0 switch those filters off, so RL samples the policy itself
    (GRPO/SRFT roll out at T = 1.0 with no filtering; SPEC 1, 6). seed None uses the global RNG.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    max_new_tokens: int = 256
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"sampling n must be >= 1 (got {self.n})")
        if self.temperature < 0:
            raise ConfigError(f"sampling temperature must be >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"sampling top_p must be in (0, 1] (got {self.top_p})")
        if self.max_new_tokens < 1:
            raise ConfigError(f"sampling max_new_tokens must be >= 1 (got {self.max_new_tokens})")


@dataclass
class Completion:
    """One sampled answer: decoded text, its token ids (EOS included when it stopped), why it ended,
    and (engines that report them, e.g. vLLM) the log-probs of the sampled tokens under the engine."""

    text: str
    token_ids: list[int]
    finish_reason: Literal["stop", "length"]
    logprobs: list[float] | None = None


class Sampler(Protocol):
    """Anything that samples completions: `generate` on encoded prompts (the trainer's path) and
    `sample` on `Example`s (evaluation, analysis), which encodes them with the sampler's encoder."""

    def generate(self, prompts: Sequence[EncodedPrompt], params: SamplingParams) -> list[list[Completion]]:
        """One list of `params.n` completions per prompt, in the order of `prompts`."""
        ...

    def sample(self, examples: Sequence[Example], params: SamplingParams) -> list[list[Completion]]:
        """`generate` on the examples' encoded prompts."""
        ...

    def sync_weights(self, model: Any) -> None:
        """Make the next `generate` sample from `model`'s current weights (called after every
        optimizer step; an engine with its own copy of the weights reloads them)."""
        ...


class EncodingSampler:
    """Mixin giving a sampler with an `encoder` the `sample(examples, params)` entry point."""

    encoder: PromptEncoder

    def sample(self, examples: Sequence[Example], params: SamplingParams) -> list[list[Completion]]:
        return self.generate([self.encoder.encode(ex) for ex in examples], params)  # type: ignore[attr-defined]


class HFSampler(EncodingSampler):
    """Sampling with `model.generate`: KV cache, left padding, rows sorted by prompt length.

    batch_size counts sequences per `generate` call (prompts x samples); suppress_tokens are token
    ids never sampled (e.g. image placeholders a VLM must not emit).

    share_prefill: with n > 1 samples of a text prompt, run the prompt through the model once and
    copy its KV cache to the n rows (`Cache.batch_repeat_interleave`) instead of prefilling every
    row; the samples are the same distribution (greedy output is identical), prefill costs 1/n.
    VLMs always prefill per row (their image features are merged inside the prefill).
    """

    engine = "hf"

    def __init__(self, bundle: Any, batch_size: int = 32, suppress_tokens: Sequence[int] | None = None,
                 share_prefill: bool = True):
        if batch_size < 1:
            raise ConfigError(f"sampler batch_size must be >= 1 (got {batch_size})")
        self.bundle = bundle
        self.batch_size = batch_size
        self.suppress_tokens = list(suppress_tokens) if suppress_tokens else None
        self.share_prefill = share_prefill
        self.encoder = PromptEncoder(bundle)
        self.on_chunk: Callable[[int], Any] | None = None  # progress hook: sequences finished per batch

    def sync_weights(self, model: Any) -> None:
        """Nothing to do: `generate` runs the policy module itself (LoRA adapters included)."""

    @torch.no_grad()
    def generate(self, prompts: Sequence[EncodedPrompt], params: SamplingParams) -> list[list[Completion]]:
        if not prompts:
            return []
        shared = self.share_prefill and params.n > 1 and not self.bundle.is_vlm
        # One row per (example, sample); sorting by prompt length keeps left padding short. With a
        # shared prefill a chunk holds whole groups (each prompt's n rows), at least one.
        rows = sorted(((i, j) for i in range(len(prompts)) for j in range(params.n)),
                      key=lambda r: (len(prompts[r[0]].input_ids), r[0], r[1]))
        step = max(1, self.batch_size // params.n) * params.n if shared else self.batch_size
        out: list[list[Completion | None]] = [[None] * params.n for _ in prompts]
        model = self.bundle.model
        was_training = model.training
        model.eval()
        try:
            with torch.random.fork_rng(devices=_rng_devices(model), enabled=params.seed is not None):
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                for start in range(0, len(rows), step):
                    chunk = rows[start:start + step]
                    if shared:
                        done = self._generate_chunk([prompts[i] for i, _ in chunk[::params.n]], params,
                                                    repeat=params.n)
                    else:
                        done = self._generate_chunk([prompts[i] for i, _ in chunk], params)
                    for (i, j), comp in zip(chunk, done):
                        out[i][j] = comp
                    if self.on_chunk is not None:
                        self.on_chunk(len(chunk))
        finally:
            model.train(was_training)
        return [[c for c in per if c is not None] for per in out]

    def _generate_chunk(self, prompts: list[Any], params: SamplingParams, repeat: int = 1) -> list[Completion]:
        """Completions for `prompts`, each repeated `repeat` times in a row (shared prefill)."""
        model = self.bundle.model
        inputs = self.encoder.batch(prompts, padding_side="left")
        device = next(model.parameters()).device
        inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
        if repeat > 1:
            inputs = self._shared_prefill(inputs, repeat)
        greedy = params.temperature == 0
        eos = self.encoder.eos_ids
        gen_kwargs: dict[str, Any] = dict(
            max_new_tokens=params.max_new_tokens, do_sample=not greedy, use_cache=True,
            eos_token_id=eos, pad_token_id=self.encoder.pad_id,
            # Explicit values override the checkpoint's generation_config (e.g. a default top_k=50),
            # so training samples the unfiltered policy unless the config asks otherwise.
            temperature=None if greedy else params.temperature,
            top_p=None if greedy else params.top_p,
            top_k=None if greedy else (params.top_k or 0),
        )
        if self.suppress_tokens:
            gen_kwargs["suppress_tokens"] = self.suppress_tokens
        recorder = SampledLogprobs(params.temperature)
        seqs = model.generate(**inputs, **gen_kwargs, logits_processor=LogitsProcessorList([recorder]))
        new = seqs[:, inputs["input_ids"].shape[1]:]
        logprobs = recorder.result(new).tolist()
        return [self._completion(ids, eos, lp) for ids, lp in zip(new.tolist(), logprobs)]

    def _shared_prefill(self, inputs: dict[str, Any], repeat: int) -> dict[str, Any]:
        """Prefill every prompt token but the last once per prompt, then give each of the `repeat`
        rows a copy of that cache; `generate` then feeds only the last prompt token per row.
        Position ids follow `generate`'s own rule for left padding (mask cumsum - 1)."""
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
        model = self.bundle.model
        cache = output_cache(model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1],
                                   position_ids=positions[:, :-1], use_cache=True))
        cache.batch_repeat_interleave(repeat)
        return {"input_ids": ids.repeat_interleave(repeat, dim=0),
                "attention_mask": mask.repeat_interleave(repeat, dim=0), cache_kwarg(model): cache}

    def _completion(self, ids: list[int], eos: list[int], logprobs: list[float]) -> Completion:
        stop = next((k for k, t in enumerate(ids) if t in eos), None)
        if stop is None:
            kept, reason = ids, "length"
        else:
            kept, reason = ids[:stop + 1], "stop"
        text = self.encoder.tokenizer.decode(kept, skip_special_tokens=True)
        return Completion(text=text, token_ids=kept, finish_reason=reason, logprobs=logprobs[:len(kept)])


class SampledLogprobs(LogitsProcessor):
    """Records log softmax(logits / T)[sampled token] at every generation step: the sampling policy's
    log-prob of each token (before top-k/top-p, which TRL and verl also leave out of the trained
    policy). `generate` runs custom processors before its temperature and top-k/top-p warpers, so
    the scores seen here are the model's logits (after token suppression). T = 0 (greedy) records T = 1.

    Each call sees the tokens chosen so far, so the token sampled after call k is read at call k+1;
    `result` reads the last one from the output ids."""

    def __init__(self, temperature: float):
        self.temperature = temperature if temperature > 0 else 1.0
        self.prev: torch.Tensor | None = None
        self.out: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prev is not None:
            self.out.append(self.prev.gather(1, input_ids[:, -1:]).squeeze(1))
        self.prev = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def result(self, new_ids: torch.Tensor) -> torch.Tensor:
        """[B, new tokens] log-probs of `new_ids` (the generated part of `generate`'s output)."""
        if self.prev is not None and len(self.out) < new_ids.shape[1]:
            self.out.append(self.prev.gather(1, new_ids[:, len(self.out):len(self.out) + 1]).squeeze(1))
        if not self.out:
            return torch.zeros(new_ids.shape, dtype=torch.float32)
        return torch.stack(self.out, dim=1).cpu()


def _rng_devices(model: Any) -> list[int]:
    """CUDA devices whose RNG `fork_rng` must save (the model's), so a seeded call leaves no trace."""
    dev = next(model.parameters()).device
    return [dev.index or 0] if dev.type == "cuda" else []

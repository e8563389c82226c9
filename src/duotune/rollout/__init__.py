"""Rollout: samplers behind the `Sampler` protocol (HF `generate`; vLLM in `rollout.vllm`, chosen by
`build_sampler`) and groups.

`HFSampler(bundle).generate(encoded_prompts, params)` (or `.sample(examples, params)`) -> one list of
`Completion`s per prompt;
`build_groups` adds group ids, demo members and truncation flags; `collate` makes [N, L] tensors.
"""

from duotune.rollout.engine import build_sampler, choose_sampler, close_sampler, sync_weights, vllm_support
from duotune.rollout.groups import CollatedBatch, Rollout, build_groups, collate
from duotune.rollout.prompts import EncodedPrompt, PromptEncoder
from duotune.rollout.sampler import Completion, HFSampler, Sampler, SamplingParams

__all__ = ["CollatedBatch", "Completion", "EncodedPrompt", "HFSampler", "PromptEncoder", "Rollout",
           "Sampler", "SamplingParams", "build_groups", "build_sampler", "choose_sampler", "close_sampler", "collate",
           "sync_weights", "vllm_support"]

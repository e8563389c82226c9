"""VLLMSampler on CUDA (marked `gpu`; run with `pytest -m gpu tests/test_rollout_vllm_gpu.py` on a
machine with a GPU and the `vllm` package): sleep mode frees the engine's GPU memory between rollouts
and still samples the synced weights; bf16 engine log-probs stay close to the bf16 trainer's; a VLM
gets its images as multi_modal_data and answers as transformers does.

bf16 tolerance: on SmolLM2-135M the bf16 engine's per-token log-probs differ from the trainer's by
up to 0.23 (mean 0.026, README), so bf16 tests compare means (< 0.1) and use the weight-sync gap
(> 1 after a 0.05-sigma perturbation of a random tiny model) as the signal, not exact tokens.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():  # checked first: importing vllm takes seconds
    pytest.skip("needs a CUDA device", allow_module_level=True)
pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'duotune[vllm]')")

from duotune.data import Example  # noqa: E402
from duotune.models import load_model  # noqa: E402
from duotune.rollout import HFSampler, SamplingParams  # noqa: E402
from duotune.rollout.vllm import VLLMSampler  # noqa: E402

PROMPTS = [f"problem {i}: " + " ".join(f"{i * 7 + k} plus {k}" for k in range(30)) for i in range(4)]


def _encoded(sampler):
    return [sampler.encoder.encode(Example(id=f"p{i}", prompt=[{"role": "user", "content": p}], answer="0"))
            for i, p in enumerate(PROMPTS)]


def _logp_gap(model, prompts, completions):
    """Mean |engine - trainer| log-prob of the sampled tokens (trainer in its own dtype)."""
    gaps = []
    for p, per in zip(prompts, completions):
        for c in per:
            ids = torch.tensor([list(p.input_ids) + c.token_ids], device="cuda")
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, len(p.input_ids) - 1:-1].float()
            lp = logits.log_softmax(-1).gather(-1, torch.tensor(c.token_ids, device="cuda")[:, None])[:, 0]
            gaps.append((lp.cpu() - torch.tensor(c.logprobs)).abs().mean())
    return float(torch.stack(gaps).mean())


def test_sleep_mode_frees_memory_and_samples_the_synced_bf16_weights():
    bundle = load_model("tiny-qwen2-h32", dtype="bfloat16", device="cuda")
    sampler = VLLMSampler(bundle, enable_sleep_mode=True, gpu_memory_utilization=0.2, max_model_len=1024)
    try:
        prompts = _encoded(sampler)
        free_asleep = torch.cuda.mem_get_info()[0]
        params = SamplingParams(n=2, temperature=1.0, max_new_tokens=16, seed=3)
        out = sampler.generate(prompts, params)  # wakes, samples, sleeps again
        assert torch.cuda.mem_get_info()[0] >= free_asleep - 64 * 2**20  # the KV cache was released again
        again = sampler.generate(prompts, params)  # seeded: the same samples after a sleep/wake cycle
        assert [[c.token_ids for c in x] for x in again] == [[c.token_ids for c in x] for x in out]
        assert _logp_gap(bundle.model, prompts, out) < 0.1
        torch.manual_seed(0)
        with torch.no_grad():
            for p in bundle.model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        assert _logp_gap(bundle.model, prompts, sampler.generate(prompts, params)) > 1.0  # still old weights
        sampler.sync_weights(bundle.model)  # wakes the weights, pushes them; generate wakes the KV cache
        assert _logp_gap(bundle.model, prompts, sampler.generate(prompts, params)) < 0.1
    finally:
        sampler.close()


def test_vlm_images_go_to_the_engine_as_multi_modal_data():
    from PIL import Image

    bundle = load_model("tiny-qwen2-vl", dtype="float32", device="cuda")
    sampler = VLLMSampler(bundle, gpu_memory_utilization=0.2, max_model_len=1024)
    try:
        img = Image.new("RGB", (84, 56), (200, 30, 30))
        ex = Example(id="v", prompt=[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "colour?"}]}],
                     answer="red", images=[img])
        params = SamplingParams(n=1, temperature=0.0, max_new_tokens=8)
        got = sampler.sample([ex], params)
        want = HFSampler(bundle).sample([ex], params)
        assert got[0][0].token_ids == want[0][0].token_ids
    finally:
        sampler.close()

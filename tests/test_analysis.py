"""Token-distribution shift and the learning-dynamics map on tiny-llm: identical models move no token,
perturbed weights do; shift statistics by hand; map coordinates equal a direct mean log-prob."""

import math

import pytest
import torch

from duotune.analysis.dynamics_map import coordinates
from duotune.analysis.teacher import Forced
from duotune.analysis.token_shift import shift_stats, token_shift
from duotune.errors import ConfigError
from duotune.models import load_model
from duotune.rollout import PromptEncoder
from duotune.tasks import make_examples


@pytest.fixture(scope="module")
def examples():
    return make_examples("arithmetic", 4, seed=0, split="test", fewshot=0)


def test_identical_models_shift_nothing_perturbed_models_do(examples):
    a, b = load_model("tiny-llm"), load_model("tiny-llm")
    stats, before, after = token_shift(a, b, examples, threshold=0.0)
    assert stats["tokens"] == int(before.mask.sum()) > 0
    assert stats["fraction"] == 0.0 and stats["moved"] == 0 and stats["mean_abs_dp"] == 0.0
    torch.manual_seed(0)
    with torch.no_grad():
        for p in b.model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    stats, _, _ = token_shift(a, b, examples, threshold=1e-3)
    assert 0.0 < stats["fraction"] <= 1.0


def test_shift_stats_by_hand():
    p0 = torch.tensor([[0.5, 0.2, 0.9, 0.3]])
    p1 = torch.tensor([[0.5, 0.45, 0.7, 0.9]])
    ent = torch.tensor([[0.1, 2.0, 1.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last token is padding
    stats = shift_stats(Forced(p0.log(), ent, mask), Forced(p1.log(), ent, mask), threshold=0.1)
    # |dp| = 0, 0.25, 0.2 on the three real tokens: two moved; entropy there (2 + 1) / 2, else 0.1.
    assert stats["tokens"] == 3 and stats["moved"] == 2
    assert stats["fraction"] == pytest.approx(2 / 3)
    assert stats["mean_abs_dp"] == pytest.approx(0.45 / 3)
    assert stats["entropy_moved"] == pytest.approx(1.5) and stats["entropy_rest"] == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="threshold"):
        shift_stats(Forced(p0.log(), ent, mask), Forced(p1.log(), ent, mask), threshold=1.5)


def test_map_coordinates_equal_direct_mean_logprob(examples):
    bundle = load_model("tiny-llm")
    enc = PromptEncoder(bundle)
    total, count = 0.0, 0
    with torch.no_grad():
        for ex in examples:
            prompt = enc.encode(ex).input_ids
            response = bundle.tokenizer(ex.demo, add_special_tokens=False)["input_ids"] + [bundle.eos_ids[0]]
            ids = torch.tensor([prompt + response])
            logp = torch.log_softmax(bundle.model(ids).logits[0].float(), -1)
            for t in range(len(prompt), ids.shape[1]):  # token t is predicted at position t - 1
                total += float(logp[t - 1, ids[0, t]])
                count += 1
    got = coordinates(bundle, {"demos": examples, "again": examples})
    assert got["demos"] == pytest.approx(total / count, abs=1e-5)
    assert got["again"] == got["demos"] and math.isfinite(got["demos"])

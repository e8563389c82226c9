"""DAPO sampling (arXiv 2503.14476): the soft overlong penalty from the completion's token count,
dynamic sampling's refill rounds and its cap, and a GRPO run that trains on informative groups only."""

import json
from pathlib import Path

import pytest
import torch

from duotune.config import load_config
from duotune.data import Example
from duotune.errors import ConfigError
from duotune.registry import Registry
from duotune.rewards import RewardManager, get_reward
from duotune.rewards.length import overlong_penalty
from duotune.rollout import Rollout
from duotune.trainers import TrainConfig, train
from duotune.trainers.sampling import Scored, dynamic_sample, informative

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny"


def test_soft_overlong_penalty():
    """L_max 20, L_cache 4: 0 up to 16 tokens, (16 - L) / 4 up to 20, -1 beyond (DAPO eq. 13)."""
    assert [overlong_penalty(n, 20, 4) for n in (3, 16, 17, 18, 20, 21)] == [0.0, 0.0, -0.25, -0.5, -1.0, -1.0]
    reward = get_reward("overlong", max_len=20, cache=4)
    totals, comps, _ = RewardManager([("math", 1.0), ("overlong", 1.0, {"max_len": 20, "cache": 4})]).score(
        ["\\boxed{1}", "\\boxed{2}"], {"answer": ["1", "1"], "completion_ids": [[0] * 10, [0] * 18]})
    assert comps["overlong"] == [0.0, -0.5] and totals == [1.0, -0.5]
    assert reward(["x"], completion_ids=[[1] * 19]) == [-0.75]
    with pytest.raises(ConfigError, match="overlong reward needs max_len >= 1 and 1 <= cache <= max_len"):
        get_reward("overlong", max_len=8, cache=9)


def _round(rewards_per_prompt):
    """A scored rollout: prompt b has a group of rows with the given rewards."""
    exs = [Example(id=f"p{b}", prompt=[{"role": "user", "content": "q"}], answer="1") for b in range(len(rewards_per_prompt))]
    r = Rollout(exs, [None] * len(exs), len(rewards_per_prompt[0]))
    flat = []
    for b, rs in enumerate(rewards_per_prompt):
        for v in rs:
            r.add(b, b, [b, int(v * 10)], f"{b}:{v}", False, False)
            flat.append(v)
    t = torch.tensor(flat, dtype=torch.float32)
    return Scored(r, t, t > 0.5, {"reward/mean": float(t.mean())})


def test_dynamic_sampling_keeps_informative_groups_and_caps_rounds():
    rounds = [_round([[1, 1], [0, 1], [0, 0]]), _round([[1, 0], [0, 0], [0.5, 0]]), _round([[0, 1]] * 3)]
    assert informative(rounds[0].rollout, rounds[0].rewards) == [False, True, False]
    calls = []

    def draw(k):
        calls.append(k)
        return rounds[k]

    batch, m = dynamic_sample(draw, want=3, max_extra_rounds=5)
    assert calls == [0, 1] and m["dynamic/rounds"] == 2 and m["dynamic/filled"] == 0
    assert batch.rollout.texts == ["1:0", "1:1", "0:1", "0:0", "2:0.5", "2:0"]
    assert batch.rewards.tolist() == [0, 1, 1, 0, 0.5, 0] and batch.rollout.group_ids == [0, 0, 1, 1, 2, 2]
    assert batch.metrics == {"reward/mean": pytest.approx(0.5)}  # round 0's: the unfiltered policy
    assert m["dynamic/sampled_prompts"] == 6 and m["dynamic/informative_frac"] == pytest.approx(3 / 6)
    calls.clear()
    capped, m = dynamic_sample(draw, want=3, max_extra_rounds=0)  # no extra round: fill with flat groups
    assert calls == [0] and m["dynamic/filled"] == 2
    assert capped.rollout.texts == ["1:0", "1:1", "0:1", "0:1", "2:0", "2:0"]


@pytest.fixture(scope="module", autouse=True)
def parity_reward():
    """Odd answers always score 1 (a flat group); even answers score by completion-length parity."""
    def reward(completions, answer, **_):
        return [1.0 if int(a) % 2 else float(len(c) % 2) for c, a in zip(completions, answer)]

    Registry.all()["reward"].register("test_parity", reward)
    yield
    Registry.all()["reward"].unregister("test_parity")


def test_dynamic_sampling_trains_on_informative_groups(tmp_path, data_file):
    """With the odd-answer prompts' groups always flat, GRPO alone trains on them (frac_reward_zero_std
    > 0 on some step); with dynamic sampling every trained group has unequal rewards and the extra
    rounds are logged."""
    over = [f"data.train={data_file}", f"run.output_dir={tmp_path}", "run.progress=false", "run.plots=false",
            "reward.names=[test_parity]", "reward.params={}", "steps=3", "prompts_per_step=4"]
    dapo = train(load_config(TrainConfig, TINY / "dapo.yaml", over + ["run.name=dapo", "rollout.max_extra_rounds=6"]))
    recs = [json.loads(x) for x in (dapo.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(r["frac_reward_zero_std"] == 0.0 and r["dynamic/filled"] == 0 for r in recs)
    assert any(r["dynamic/rounds"] >= 2 for r in recs) and all(r["n_prompts"] == 4 for r in recs)
    plain = train(load_config(TrainConfig, TINY / "dapo.yaml", over + ["run.name=plain",
                                                                       "rollout.dynamic_sampling=false"]))
    recs = [json.loads(x) for x in (plain.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(r["frac_reward_zero_std"] for r in recs) >= 0.25


def test_dynamic_sampling_needs_rollout_groups(tmp_path, data_file):
    cfg = load_config(TrainConfig, TINY / "sft.yaml", [f"data.train={data_file}", f"run.output_dir={tmp_path}",
                                                       "run.progress=false", "rollout.dynamic_sampling=true"])
    with pytest.raises(Exception, match="rollout.dynamic_sampling drops rollout groups with equal rewards"):
        train(cfg)


@pytest.mark.parametrize("recipe", ["dapo", "uft"])
def test_extra_rounds_and_prefix_plans_resume_identically(tmp_path, data_file, recipe):
    """Dynamic-sampling rounds and expert-prefix plans are pure functions of (seed, step, rank,
    round): a run stopped after step 1 and resumed logs what the uninterrupted run logged."""
    over = [f"data.train={data_file}", f"run.output_dir={tmp_path}", "run.progress=false", "run.plots=false",
            "reward.names=[test_parity]", "reward.params={}", "steps=3", "run.save_every=1"]
    keys = ("reward/mean", "dynamic/rounds", "prefix/len_mean", "loss/total")

    def run(*extra):
        res = train(load_config(TrainConfig, TINY / f"{recipe}.yaml", over + list(extra)))
        recs = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
        return [[r.get(k) for k in keys] for r in recs]

    full = run("run.name=full")
    run("run.name=cut", "run.stop_after=1")
    assert run("run.name=cut", "run.resume=auto") == full

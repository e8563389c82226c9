"""Per-method typed settings and what each method makes the step compute (issue 14): settings errors
name the method and its keys, old log-probs / reference only where used, the KL controllers get the
observed KL and sample count, GRPO-D's beta is the one the loss used, training log-probs are at the
rollout temperature, PPO mini-batches are disjoint with the ratio against the sampling policy."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from duotune.config import load_config
from duotune.errors import ConfigError
from duotune.registry import Registry
from duotune.rewards import RewardManager
from duotune.trainers import METHODS, TrainConfig, stage_configs, train
from duotune.trainers import step as step_module
from duotune.trainers.methods import Method
from duotune.trainers.methods.grpo import GRPODSettings, GRPOSettings, grpo_loss
from duotune.trainers.methods.luffy import luffy_loss
from duotune.trainers.methods.rl_sft_loss import rl_sft_loss
from duotune.trainers.methods.settings import WarmupCosineMix

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny"


def _share(completions, **_):
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]


def _any(completions, **_):
    return [float(any(ch.isdigit() for ch in c)) for c in completions]


@pytest.fixture(scope="module", autouse=True)
def probe():
    """A reward, and `probe_grpo` / `probe_grpo_d`: GRPO / GRPO-D whose loss records what it was given."""
    calls = []

    def recording(inp, logp, ent):
        calls.append({"beta": inp.beta, "prompts": sorted(set(inp.batch.prompt_index.tolist())),
                      "logp": logp.detach().clone(), "old": inp.old_logp, "mask": inp.mask.bool(),
                      "rollout": inp.batch.rollout_logp, "ref": inp.ref_logp})
        return grpo_loss(inp, logp, ent)

    reg = Registry.all()["reward"]
    reg.register("test_share", _share)
    reg.register("test_any", _any)
    grpo = METHODS.get("grpo")
    METHODS.register("probe_grpo", Method(GRPOSettings, grpo.demo_entry, recording, paper="test"))
    METHODS.register("probe_grpo_d", Method(GRPODSettings, grpo.demo_entry, recording, paper="test"))
    yield calls
    reg.unregister("test_share")
    reg.unregister("test_any")
    METHODS.unregister("probe_grpo")
    METHODS.unregister("probe_grpo_d")


def _cfg(tmp_path, data_file, recipe, *extra):
    return load_config(TrainConfig, TINY / f"{recipe}.yaml", [
        f"data.train={data_file}", f"run.output_dir={tmp_path}", "run.progress=false", "run.plots=false",
        "reward.names=[test_share]", *extra])


def _records(res):
    return [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ settings are typed per method

def test_a_key_the_method_does_not_take_is_an_error_naming_its_keys(tmp_path, data_file):
    with pytest.raises(ConfigError, match=r"method 'srft' does not take 'aggregation'; srft takes: .*rl_coef"):
        _cfg(tmp_path, data_file, "srft", "algo.aggregation=token_mean")
    with pytest.raises(ConfigError, match=r"'demo_gamma' \(moved: demo_gamma -> .*did you mean 'gamma'"):
        _cfg(tmp_path, data_file, "srft", "algo.demo_gamma=0.2")
    with pytest.raises(ConfigError, match=r"method 'sft' does not take 'clip_high'; sft takes: demo_weight"):
        _cfg(tmp_path, data_file, "sft", "algo.clip_high=0.28")
    with pytest.raises(ConfigError, match=r"'kl.bta'; kl of grpo takes: beta, clamp, controller, estimator, "
                                          r"horizon, target .*did you mean 'beta'"):
        _cfg(tmp_path, data_file, "grpo", "algo.kl={controller: adaptive, bta: 1}")
    with pytest.raises(ConfigError, match=r"kl.controller: Input should be 'grpo_d'"):
        _cfg(tmp_path, data_file, "grpo_d", "algo.kl.controller=fixed")
    with pytest.raises(ConfigError, match=r"method 'grpo' does not take 'policy_loss' \(moved"):
        _cfg(tmp_path, data_file, "grpo", "algo.policy_loss=luffy")


def test_pipelines_take_settings_per_stage(tmp_path, data_file):
    with pytest.raises(ConfigError, match=r"with `stages`, method settings go into each stage"):
        _cfg(tmp_path, data_file, "sft_then_grpo", "algo={advantage: grpo}")
    with pytest.raises(ConfigError, match=r"stages\[0\].algo: method 'sft' does not take 'advantage'"):
        _cfg(tmp_path, data_file, "sft_then_grpo", "stages.0.algo={advantage: grpo}")
    sft, grpo = stage_configs(_cfg(tmp_path, data_file, "sft_then_grpo"))
    assert type(sft.algo).__name__ == "SFTSettings" and grpo.algo.kl.beta == 0.05


def test_settings_defaults_are_the_papers_and_choices_reach_the_loss():
    luffy = METHODS.get("luffy").settings()
    assert (luffy.advantage, luffy.aggregation, luffy.entropy_coef, luffy.clip) == ("no_std", "sum_over_lmax",
                                                                                     0.001, False)
    assert (luffy.demo_weight.name, luffy.demo_weight.gamma) == ("luffy", 0.1)
    srft = METHODS.get("srft").settings()
    assert (srft.sft_coef, srft.rl_coef, srft.gamma, srft.sft_weight_sign) == (0.5, 0.1, 0.1, -1)
    grpo_d = METHODS.get("grpo_d").settings()
    assert grpo_d.kl.controller == "grpo_d" and grpo_d.kl.explore_frac == 0.3
    # CHORD's mu as a typed schedule: linear warm-up to 0.9 over 10 %, cosine to 0.05 over the rest
    mix = WarmupCosineMix(warmup_frac=0.1)
    assert (mix.at(0.05), mix.at(0.1), mix.at(1.0)) == pytest.approx((0.45, 0.9, 0.05))
    assert mix.at(0.55) == pytest.approx(0.05 + 0.85 * 0.5)


def _loss_batch(demo_rows=False):
    """Two rows of 3 tokens; row 1 is a demo row when `demo_rows`."""
    from types import SimpleNamespace

    is_demo = torch.tensor([False, demo_rows])
    mask = torch.ones(2, 3)
    batch = SimpleNamespace(is_demo=is_demo, demo_mask=mask * is_demo[:, None].float())
    return batch, mask


def _inputs(settings, batch, mask, old=None, adv=(1.0, -1.0)):
    from duotune.trainers.methods import LossInputs

    return LossInputs(settings=settings, batch=batch, mask=mask, rewards=torch.tensor([1.0, 0.0]),
                      correct=torch.tensor([True, False]), advantages=torch.tensor(adv), old_logp=old,
                      ref_logp=None, beta=0.0, progress=0.5, l_max=4)


def test_rl_sft_loss_uses_its_demo_weight():
    """The demo term is -mean(J) over demo tokens: NLL -mean(logp); DFT -mean(sg(p) logp)."""
    batch, mask = _loss_batch(demo_rows=True)
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.2, 0.4, 0.8]]))
    for weight, expect in (("nll", -logp[1].mean()), ("dft", -(logp[1].exp() * logp[1]).mean())):
        s = METHODS.get("rl_sft_loss").settings.model_validate({"demo_weight": weight, "entropy_coef": 0})
        out = rl_sft_loss(_inputs(s, batch, mask), logp, None)
        assert out.metrics["loss/nll"] == pytest.approx(float(expect), rel=1e-6)


def test_luffy_clip_flag_and_dual_clip_reach_the_surrogate():
    """rho = 2 on every rollout token, A = +1 and -1: unclipped -rho*A; clipped at 1.2 for A > 0
    (max(-2, -1.2) = -1.2 ... -min(2, 1.2) = -1.2) and dual-clip c = 3 bounds A < 0 at 3."""
    batch, mask = _loss_batch()
    logp = torch.zeros(2, 3)
    old = torch.full((2, 3), -float(torch.log(torch.tensor(2.0))))
    cls = METHODS.get("luffy").settings
    for over, expect in (({}, [-2.0, 2.0]), ({"clip": True}, [-1.2, 2.0]),
                         ({"clip": True, "dual_clip": 1.5}, [-1.2, 1.5])):
        s = cls.model_validate({"aggregation": "token_mean", "entropy_coef": 0, **over})
        tok_mean = luffy_loss(_inputs(s, batch, mask, old=old), logp, None).loss
        assert float(tok_mean) == pytest.approx(sum(expect) / 2, rel=1e-6), over


# ------------------------------------------------------------------ what the step computes

def test_srft_never_computes_old_logprobs_and_grpo_reuse_does(tmp_path, data_file, monkeypatch):
    calls = []
    real = step_module.batch_logprobs
    monkeypatch.setattr(step_module, "batch_logprobs", lambda model, *a, **k: calls.append(model) or real(model, *a, **k))
    train(_cfg(tmp_path, data_file, "srft", "steps=1", "algo.ppo_mini_batches=2", "run.name=srft",
               "reward.names=[test_any]"))
    assert calls == []  # SRFT reads no ratio: no old-log-prob forward even with 2 mini-batches
    res = train(_cfg(tmp_path, data_file, "grpo", "steps=1", "num_iterations=2", "run.name=grpo"))
    # one reference forward (beta 0.05) and one old-log-prob forward of the policy
    assert len(calls) == 2 and calls[1] is res.bundle.model and calls[0] is not res.bundle.model
    calls.clear()
    train(_cfg(tmp_path, data_file, "grpo", "steps=1", "algo.kl.beta=0", "run.name=nokl"))
    assert calls == []  # one update, no KL: neither forward


def test_each_prompt_is_encoded_once_per_step(tmp_path, data_file, monkeypatch):
    """The sampler takes the step's encoded prompts: 2 prompts, 1 step -> 2 encodings (it was 4:
    the trainer and the sampler each encoded them, for a VLM loading images twice)."""
    from duotune.rollout.prompts import PromptEncoder

    seen = []
    real = PromptEncoder.encode
    monkeypatch.setattr(PromptEncoder, "encode", lambda self, ex: seen.append(ex.id) or real(self, ex))
    train(_cfg(tmp_path, data_file, "luffy", "steps=1"))
    assert len(seen) == 2 and len(set(seen)) == 2


def test_adaptive_kl_gets_the_observed_kl_and_the_sequences_of_the_step(tmp_path, data_file):
    """beta_{k+1} = beta_k (1 + clip(kl_k / target - 1, -0.2, 0.2) n / horizon), n = 2 prompts x G 4
    = 8 sequences (the trainer passed n = 1 before)."""
    res = train(_cfg(tmp_path, data_file, "grpo", "steps=4", "optim.lr=1e-2",
                     "algo.kl={controller: adaptive, beta: 0.1, target: 1.0e-6, horizon: 40}"))
    recs = _records(res)
    beta = 0.1
    for r in recs:
        assert r["kl/beta"] == pytest.approx(beta, rel=1e-9)
        beta *= 1 + min(max(r["kl/mean"] / 1e-6 - 1, -0.2), 0.2) * 8 / 40
    assert recs[-1]["kl/beta"] > 0.1 * 1.02  # 3 updates of +4 % once the KL is above target


def test_grpo_d_beta_logged_is_the_one_used_and_constant_within_a_rollout_batch(tmp_path, data_file, probe):
    probe.clear()
    res = train(_cfg(tmp_path, data_file, "grpo", "method=probe_grpo_d", "steps=4", "num_iterations=2",
                     "algo.kl={beta_min: 0.01, beta_max: 0.05}"))
    used = [c["beta"] for c in probe]
    # 4 rollout steps on t = 3, w = round(0.9) = 1: mid 0.03, min 0.01, then 0.03, max 0.05
    assert used == pytest.approx([0.03, 0.03, 0.01, 0.01, 0.03, 0.03, 0.05, 0.05])
    assert [r["kl/beta"] for r in _records(res)] == pytest.approx(used[::2])


def test_training_logprobs_are_at_the_rollout_temperature(tmp_path, data_file, probe):
    """Sampled at T = 0.5, a fresh batch's training log-probs equal the sampler's: ratio exactly 1
    (max |diff| 1e-6 measured); at T = 1 (the old behaviour) they differ by ~0.5 per token."""
    probe.clear()
    train(_cfg(tmp_path, data_file, "grpo", "method=probe_grpo", "steps=1", "rollout.temperature=0.5"))
    (call,) = probe
    diff = (call["logp"] - call["rollout"])[call["mask"]]
    assert call["mask"].any() and float(diff.abs().max()) < 1e-4


def test_ppo_mini_batches_are_disjoint_with_the_ratio_against_the_sampler(tmp_path, data_file, probe):
    probe.clear()
    res = train(_cfg(tmp_path, data_file, "grpo", "method=probe_grpo", "steps=1", "prompts_per_step=4",
                     "algo.ppo_mini_batches=2", "algo.kl.beta=0", "optim.lr=1e-2"))
    first, second = probe
    assert first["prompts"] == [0, 1] and second["prompts"] == [2, 3]
    for c in (first, second):  # old log-probs are the sampling policy's
        assert float((c["old"] - c["rollout"])[c["mask"]].abs().max()) < 1e-4
    # the first update moved the policy: the second half's ratio is no longer 1
    assert float((second["logp"] - second["old"])[second["mask"]].abs().max()) > 1e-3
    assert _records(res)[0]["train/updates"] == 2


def test_resumed_adaptive_kl_continues_from_the_controllers_state(tmp_path, data_file):
    over = ["steps=3", "run.save_every=1", "optim.lr=1e-2", "run.keep_optimizer_state=true",
            "algo.kl={controller: adaptive, beta: 0.1, target: 1.0e-6, horizon: 40}"]
    full = train(_cfg(tmp_path, data_file, "grpo", "run.name=full", *over))
    train(_cfg(tmp_path, data_file, "grpo", "run.name=cut", "run.stop_after=1", *over))
    cut = train(_cfg(tmp_path, data_file, "grpo", "run.name=cut", "run.resume=auto", *over))
    from duotune.trainers.checkpoint import load_trainer_state

    state = load_trainer_state(cut.run_dir / "checkpoint-000003")
    assert set(state["kl"]) == {"value"}  # the controller's own state_dict
    assert [r["kl/beta"] for r in _records(cut)] == pytest.approx([r["kl/beta"] for r in _records(full)])


# ------------------------------------------------------------------ solved, recipes, help

def test_solved_reads_the_accuracy_part_of_accuracy_format():
    manager = RewardManager(["accuracy_format"])
    good = "<think>x</think> <answer>3</answer>"
    wrong_but_formatted = "<think>x</think> <answer>4</answer>"
    totals, comps, _ = manager.score([good, wrong_but_formatted, "so \\boxed{3}"], {"answer": ["3", "3", "3"]})
    assert totals == [2.0, 1.0, 1.0]   # the format bonus alone is 1.0, above the old 0.5 threshold
    assert manager.correct(comps) == [True, False, True]
    fmt_only = RewardManager(["math", "format_think_answer"])
    _, comps, _ = fmt_only.score([wrong_but_formatted], {"answer": ["3"]})
    assert fmt_only.correct(comps) == [False]


def test_othink_recipes_use_r1v_aggregation_and_eps():
    for path in sorted((ROOT / "configs" / "vision").glob("othink_*_grpo*.yaml")):
        cfg = load_config(TrainConfig, path, ["data.train=x.jsonl"])
        assert (cfg.algo.aggregation, cfg.algo.adv_eps) == ("seq_mean_token_mean", 1e-4), path.name


def test_srft_and_luffy_recipes_use_the_released_mini_batches():
    for name in ("srft", "luffy"):
        cfg = load_config(TrainConfig, ROOT / "configs" / f"{name}.yaml")
        assert (cfg.num_iterations, cfg.algo.ppo_mini_batches) == (1, 2)


def test_list_method_prints_settings_with_defaults_and_paper():
    out = subprocess.run([sys.executable, "-m", "duotune.cli", "list", "method", "srft"], capture_output=True,
                         text=True, check=True).stdout
    assert "SRFT arXiv 2506.19767" in out and "needs: rollouts, demos" in out
    assert "sft_coef" in out and "[default: 0.5]" in out and "sft_weight_sign" in out
    help_out = subprocess.run([sys.executable, "-m", "duotune.cli", "train", "--help", "luffy"],
                              capture_output=True, text=True, check=True).stdout
    assert "demo_weight.gamma" in help_out and "[default: 0.1]" in help_out and "clip" in help_out


def test_reward_params_reach_the_reward(tmp_path, data_file):
    """reward.params sets a reward's keyword parameters: the verifier's mode (issue 17) here."""
    from duotune.data import load_examples
    from duotune.rollout import EncodedPrompt, Rollout
    from duotune.trainers.scoring import score_rollout

    rollout = Rollout(load_examples([{"prompt": "1 + 2?", "answer": "3"}]), [EncodedPrompt([1])], 1)
    rollout.add(0, 0, [5, 6], "Adding them, the final answer is 3.", False, False)
    for params, expect in (({}, 0.0), ({"math": {"mode": "lenient"}}, 1.0)):
        cfg = _cfg(tmp_path, data_file, "grpo", "reward.names=[math]", f"reward.params={json.dumps(params)}")
        total, correct, _ = score_rollout(rollout, cfg.reward)
        assert total.tolist() == [expect] and correct.tolist() == [bool(expect)]
    with pytest.raises(ConfigError, match=r"reward.params names \['mcq'\]"):
        _cfg(tmp_path, data_file, "grpo", "reward.names=[math]", "reward.params={mcq: {}}")


def test_truncated_importance_sampling_reaches_the_policy_gradient():
    """algo.rollout_correction=tis weights each rollout token by min(exp(logp_train - logp_sampler), C):
    with the sampler 3x less likely than the trainer, every weight is capped at C = 2, so the surrogate
    (-A rho with rho = 1) doubles; demo tokens (LUFFY) are untouched; `none` leaves the loss alone."""
    batch, mask = _loss_batch(demo_rows=True)
    logp = torch.log(torch.full((2, 3), 0.5))
    batch.rollout_logp = (logp - torch.log(torch.tensor(3.0))) * torch.tensor([[1.0], [0.0]])
    grpo = METHODS.get("grpo").settings
    base = grpo_loss(_inputs(grpo.model_validate({}), batch, mask), logp, None).loss
    out = grpo_loss(_inputs(grpo.model_validate({"rollout_correction": "tis"}), batch, mask), logp, None)
    assert float(out.loss) == pytest.approx(2 * float(base)) and out.metrics["rollout/is_clip_frac"] == 1.0
    luffy = METHODS.get("luffy").settings
    for kind, rollout_factor in (("none", 1.0), ("tis", 2.0)):
        s = luffy.model_validate({"aggregation": "token_mean", "entropy_coef": 0, "rollout_correction": kind})
        tok_loss = luffy_loss(_inputs(s, batch, mask, adv=(1.0, 1.0)), logp, None).loss
        # row 0: -A rho = -1 per token (x the weight); row 1 (demo): -A p/(p+0.1) = -0.5/0.6
        assert float(tok_loss) == pytest.approx((-rollout_factor - 0.5 / 0.6) / 2, rel=1e-6), kind


def test_the_sampler_trainer_mismatch_is_logged_every_step(tmp_path, data_file):
    """rollout/logp_diff_mean and _max each step: on the HF engine the sampler's log-probs are the
    trainer's (1e-6 measured), so a large value would mean the two disagree about the policy."""
    recs = _records(train(_cfg(tmp_path, data_file, "grpo", "steps=2", "rollout.temperature=0.7")))
    assert all(r["rollout/logp_diff_max"] < 1e-4 and "rollout/logp_diff_mean" in r for r in recs)


def test_the_first_line_names_the_layout_and_the_engine(tmp_path, data_file, capsys):
    train(_cfg(tmp_path, data_file, "grpo", "steps=1"))
    first = capsys.readouterr().out.splitlines()[0]
    # tiny-llm's heads are 16 wide: vLLM's CPU attention cannot serve them, so auto falls back to hf
    assert first.startswith("duotune: world size 1 (single") and "; rollout engine: hf (" in first

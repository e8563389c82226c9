"""Vision studies at the tiny scale: warm-up checkpoint, OThink-MR1 and VLAA-Thinking runners end to end
(tables with the right shape, the cross-task matrix's rows/cols, per-type curves), table builders on
exact numbers, and image-placeholder suppression during sampling."""

import json

import pytest
import torch

from duotune.models import load_model
from duotune.studies import get_scale, othink, vlaa
from duotune.studies.common import pct
from duotune.studies.warmup import ensure_warmup, image_feature_stats, suppression_check
from duotune.tasks import make_examples


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    root = tmp_path_factory.mktemp("warm")
    return ensure_warmup(get_scale("tiny"), root)


def test_warmup_saves_a_reusable_checkpoint(warm):
    assert (warm / "config.json").is_file() and (warm / "warmup.json").is_file()
    # stage 1 (tower pre-training) ran first and the SFT started from its checkpoint
    tower = warm.parents[1] / "tower" / "final"
    assert json.loads((tower / "tower.json").read_text())["steps"] == get_scale("tiny").tower_steps
    assert f"model: {tower}" in (warm.parents[1] / "warmup" / "config.yaml").read_text()
    assert load_model(str(warm)).is_vlm
    # a second call reuses the checkpoint instead of training again
    assert ensure_warmup(get_scale("tiny"), warm.parents[1]) == warm


def test_a_warmup_trained_again_reproduces_its_weights(warm, tmp_path):
    """A new session retrains the warm-up (its checkpoint is not committed); the store's finished runs
    are reused only if it comes out the same (studies.store.warmup_settings), so it must."""
    from duotune.studies.store import weights_fingerprint

    assert weights_fingerprint(ensure_warmup(get_scale("tiny"), tmp_path)) == weights_fingerprint(warm)


def test_othink_tiny_writes_table1_cross_task_and_matrix(warm, tmp_path):
    rec = othink.run("tiny", tmp_path, tasks=("counting",), methods=("sft", "grpo_d"), warmup=warm)
    assert rec["table1"]["header"] == ["model", "counting"]
    assert [r[0] for r in rec["table1"]["rows"]] == ["base (warm-up)", "+SFT", "+GRPO-D"]
    assert rec["cross_task"]["header"] == ["model", "counting -> geometry"]
    m = rec["matrix"]  # rows = base + each trained run, columns = every task's held-out split
    assert m["models"] == ["base", "counting-sft-s0", "counting-grpo_d-s0"]
    assert m["benchmarks"] == ["counting", "geometry"]
    assert all(0.0 <= m["accuracy"][k][b] <= 1.0 for k in m["models"] for b in m["benchmarks"])
    on_disk = json.loads((tmp_path / "othink.json").read_text())
    assert on_disk["matrix"] == m and on_disk["scale"]["name"] == "tiny"
    md = (tmp_path / "othink.md").read_text()
    assert "| +GRPO-D |" in md and "counting -> geometry" in md
    assert (tmp_path / "curves_counting.png").stat().st_size > 0
    betas = [r["kl/beta"] for r in _metrics(tmp_path / "runs" / "counting-grpo_d-s0")]
    # GRPO-D counting (beta_min 0.04, beta_max 0.10): after the last update beta(t) = beta_max
    assert betas[-1] == pytest.approx(0.10)
    # a re-run reuses the finished runs (<out>/results) instead of training again
    stamp = (tmp_path / "runs" / "counting-sft-s0" / "metrics.jsonl").stat().st_mtime_ns
    again = othink.run("tiny", tmp_path, tasks=("counting",), methods=("sft", "grpo_d"), warmup=warm)
    assert again["matrix"] == m
    assert (tmp_path / "runs" / "counting-sft-s0" / "metrics.jsonl").stat().st_mtime_ns == stamp


def test_vlaa_tiny_three_arms_same_budget_and_per_type_curves(warm, tmp_path):
    rec = vlaa.run("tiny", tmp_path, warmup=warm)
    assert rec["table"]["header"] == ["model", "digit", "iou", "math", "mcq", "overall", "format %", "train s"]
    assert [r[0] for r in rec["table"]["rows"]] == ["base (warm-up)", "GRPO", "SFT", "SFT -> GRPO"]
    steps = {arm: _metrics(tmp_path / "runs" / f"{arm}-s0")
             for arm in vlaa.ARMS}
    assert {arm: len(recs) for arm, recs in steps.items()} == {"grpo": 2, "sft": 2, "sft_then_grpo": 2}
    assert [(r["stage"], r["method"]) for r in steps["sft_then_grpo"]] == [(0, "sft"), (1, "grpo")]
    # the trainer logs the mixed reward's per-type means; each GRPO step sees at least one type
    typed = [k for r in steps["grpo"] for k in r
             if k.startswith("reward/mixed/") and k.split("/")[-1] in vlaa.MIXTURE.values()]
    assert typed and (tmp_path / "curves_per_type.png").is_file()
    assert set(rec["results"]["base"]["by_type"]) == set(vlaa.MIXTURE.values())
    # H6 paired overall and per type, each row with a verdict read off its interval
    assert [r[1] for r in rec["claims"]["rows"]] == ["overall", "digit", "iou", "math", "mcq"]
    assert all(r[0] == "H6 GRPO > SFT -> GRPO" and r[-1] in ("held", "did not hold", "inconclusive")
               for r in rec["claims"]["rows"])
    assert "## Claim H6" in (tmp_path / "vlaa.md").read_text()
    # a re-run (a new session) reuses the finished runs (<out>/results) instead of training again
    stamp = (tmp_path / "runs" / "grpo-s0" / "metrics.jsonl").stat().st_mtime_ns
    again = vlaa.run("tiny", tmp_path, warmup=warm)
    assert again["table"] == rec["table"] and again["results"] == rec["results"]
    assert (tmp_path / "runs" / "grpo-s0" / "metrics.jsonl").stat().st_mtime_ns == stamp


def test_sft_then_grpo_splits_the_budget_and_keeps_the_grpo_stage_settings():
    from duotune.config import load_config
    from duotune.trainers import TrainConfig, stage_configs

    cpu = get_scale("cpu")
    cfg = load_config(TrainConfig, "configs/vision/vlaa_sft_then_grpo.yaml",
                      vlaa.arm_overrides("sft_then_grpo", cpu) + ["data.train=x.jsonl"])
    sft, grpo = stage_configs(cfg)
    assert (sft.method, sft.steps, sft.optim.lr) == ("sft", cpu.steps // 2, cpu.sft_lr)
    assert (grpo.method, grpo.steps, grpo.optim.lr) == ("grpo", cpu.steps - cpu.steps // 2, cpu.rl_lr)
    # the recipe's adaptive KL of the GRPO stage survives the budget split (VLAA-Thinking, SPEC 3)
    assert (grpo.algo.kl.controller, grpo.algo.kl.beta, grpo.algo.kl.target) == ("adaptive", 1e-3, 5e-4)
    assert vlaa.arm_overrides("grpo", cpu) == []


def test_table_builders_on_exact_numbers():
    acc = {"base": {"counting": 0.5, "geometry": 0.25}}
    for i, m in enumerate(othink.METHODS):
        acc[f"counting-{m}-s0"] = {"counting": 0.6 + 0.1 * i, "geometry": 0.1 * i}
        acc[f"geometry-{m}-s0"] = {"counting": 0.125 * i, "geometry": 0.3 + 0.1 * i}
    res = {k: {t: {"accuracy": v} for t, v in d.items()} for k, d in acc.items()}
    _, rows = othink.table1(res, othink.TASKS, tuple(othink.METHODS))
    assert rows == [["base (warm-up)", "50.0", "25.0"], ["+SFT", "60.0", "30.0"],
                    ["+GRPO", "70.0", "40.0"], ["+GRPO-D", "80.0", "50.0"]]
    _, cross = othink.cross_task(res, othink.TASKS, tuple(othink.METHODS))
    assert cross == [["base (warm-up)", "25.0", "50.0"], ["+SFT", "0.0", "0.0"],
                     ["+GRPO", "10.0", "12.5"], ["+GRPO-D", "20.0", "25.0"]]
    assert pct(None) == "-"


def test_image_placeholders_are_suppressed_when_sampling():
    bundle = load_model("tiny-llava")
    (img,) = bundle.vision_token_ids
    # make the placeholder the model's favourite token, so an unsuppressed sampler emits it
    bundle.model.lm_head.register_forward_hook(lambda m, i, o: o + 50.0 * torch.nn.functional.one_hot(
        torch.tensor(img), o.shape[-1]).to(o.dtype))
    out = suppression_check(bundle, make_examples("counting", 2, 0, size=96), max_new_tokens=4)
    assert out["placeholder_ids"] == [img]
    assert out["suppressed"]["placeholders_emitted"] == 0 and out["suppressed"]["training_forward"] == "ok"
    assert out["unsuppressed"]["placeholders_emitted"] == 16  # 2 prompts x 2 samples x 4 tokens
    assert "do not match" in out["unsuppressed"]["training_forward"]


def test_image_feature_stats_detect_collapsed_features():
    bundle = load_model("tiny-llava")
    examples = make_examples("counting", 2, 0, size=96)
    fresh = image_feature_stats(bundle, examples)
    assert fresh["images"] == 2 and fresh["patch_spread"] > 0.01  # random features differ by patch
    proj = bundle.model.model.multi_modal_projector
    with torch.no_grad():  # every patch projected to the same vector c = (3, 4, 0, ...): ||c|| = 5
        proj.linear_2.weight.zero_()
        proj.linear_2.bias.zero_()
        proj.linear_2.bias[:2] = torch.tensor([3.0, 4.0])
    collapsed = image_feature_stats(bundle, examples)
    assert collapsed["feature_norm"] == pytest.approx(5.0) and collapsed["patch_spread"] == pytest.approx(0.0)
    emb = bundle.model.get_input_embeddings().weight
    assert collapsed["text_embedding_norm"] == pytest.approx(float(emb.norm(dim=-1).mean()), rel=1e-6)


def test_unknown_names_raise_config_errors(tmp_path):
    from duotune.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown method \\['grpo-d'\\]; choose from sft, grpo, grpo_d"):
        othink.run("tiny", tmp_path, methods=("grpo-d",), warmup=tmp_path)
    with pytest.raises(ConfigError, match="unknown arm"):
        vlaa.run("tiny", tmp_path, arms=("rl",), warmup=tmp_path)
    with pytest.raises(ConfigError, match="unknown study scale 'gpu'; valid: tiny, cpu"):
        get_scale("gpu")


def test_scale_overrides_from_the_command_line():
    import argparse

    from duotune.errors import ConfigError
    from duotune.studies.common import add_scale_args, scale_from_args

    p = argparse.ArgumentParser()
    add_scale_args(p)
    scale = scale_from_args(p.parse_args(["--scale", "cpu", "--rl-lr", "1e-6", "--steps", "9"]))
    assert (scale.rl_lr, scale.steps, scale.sft_lr) == (1e-6, 9, get_scale("cpu").sft_lr)
    assert scale_from_args(p.parse_args([])) == get_scale("cpu")  # no flags: the scale as defined
    assert scale_from_args(p.parse_args(["--scale", "protocol", "--seeds", "2"])).seeds == 2
    with pytest.raises(ConfigError, match="steps=0 must be positive"):
        get_scale("cpu", steps=0)
    with pytest.raises(ConfigError, match="unknown scale field 'lr'"):
        get_scale("cpu", lr=1e-3)


def test_othink_continues_from_the_store_on_a_fresh_folder(warm, tmp_path, monkeypatch):
    """A new session has no run folder: the finished runs come back from the committed store (results
    and the training logs the KL-schedule check and the curves read), and nothing is trained again."""
    store = tmp_path / "store"
    first = othink.run("tiny", tmp_path / "a", tasks=("counting",), methods=("grpo_d",), warmup=warm, store=store)
    assert sorted(p.name for p in (store / "results").iterdir()) == ["base.json", "counting-grpo_d-s0.json"]
    assert sorted(p.name for p in (store / "runs" / "counting-grpo_d-s0").iterdir()) == ["config.yaml",
                                                                                         "metrics.jsonl"]
    monkeypatch.setattr(othink, "run_recipe", lambda *a, **k: pytest.fail("trained a finished run again"))
    again = othink.run("tiny", tmp_path / "b", tasks=("counting",), methods=("grpo_d",), warmup=warm, store=store)
    assert again["matrix"] == first["matrix"] and again["schedule"] == first["schedule"]
    at = again["schedule"]["counting-grpo_d-s0"]["at"]  # all None without the restored training log
    assert at and all(p is not None and p["kl/beta"] > 0 for p in at.values())


def test_othink_reuses_finished_runs_only_under_the_same_settings(warm, tmp_path):
    from duotune.errors import ConfigError

    othink.run("tiny", tmp_path, tasks=("counting",), methods=("sft",), warmup=warm)
    with pytest.raises(ConfigError, match=r"base\.json was made with other settings \(sft_lr differ\)"):
        othink.run(get_scale("tiny", sft_lr=5e-4), tmp_path, tasks=("counting",), methods=("sft",), warmup=warm)


def _scored(per_item):
    return {"accuracy": sum(per_item) / len(per_item), "per_item": per_item}


def test_claims_h4_h5_on_exact_items_and_the_schedule_gate():
    """20 items x 2 seeds: GRPO-D right on all, GRPO, SFT and the base on none. Every item's difference
    is then the same, so every bootstrap replicate gives GRPO-D - GRPO = +100 points and SFT - base = 0
    exactly: H4 held, SFT does not transfer (0 is inside [0, 0]) while GRPO-D does, so H5 held; a
    schedule that never acted turns every verdict into "inconclusive: the schedule did not act"."""
    none = [0.0] * 20
    res = {"base": {t: _scored(none) for t in othink.TASKS}}
    for k in range(2):
        for a in othink.TASKS:
            res[f"{a}-grpo_d-s{k}"] = {t: _scored([1.0] * 20) for t in othink.TASKS}
            res[f"{a}-grpo-s{k}"] = {t: _scored(none) for t in othink.TASKS}
            res[f"{a}-sft-s{k}"] = {t: _scored(none) for t in othink.TASKS}
    cl = othink.claims(res, othink.TASKS, tuple(othink.METHODS), seeds=2)
    h4 = [r for r in cl["rows"] if r[0].startswith("H4")]
    assert [r[1] for r in h4] == ["counting", "counting -> geometry", "geometry -> counting", "geometry"]
    assert all(r[2:] == ["+100.0", "[+100.0, +100.0]", "held"] for r in h4)
    assert [r[2:] for r in cl["rows"] if r[0] == "H5 GRPO-D > base"] == [["+100.0", "[+100.0, +100.0]", "held"]] * 2
    sft = [r for r in cl["rows"] if r[0] == "H5 SFT > base"]
    assert all(r[2:] == ["+0.0", "[+0.0, +0.0]", "inconclusive"] for r in sft)
    assert cl["h5"] == [["counting -> geometry", "held"], ["geometry -> counting", "held"]]
    table = othink.table1(res, othink.TASKS, tuple(othink.METHODS), seeds=2)[1]
    assert table[3] == ["+GRPO-D", "100.0 [100.0, 100.0]", "100.0 [100.0, 100.0]"]
    idle = {"counting-grpo_d-s0": {"acted": False}, "counting-grpo_d-s1": {"acted": False}}
    gated = othink.claims(res, othink.TASKS, tuple(othink.METHODS), seeds=2, schedule=idle)
    assert gated["schedule_acted"] is False
    assert {r[-1] for r in gated["rows"]} == {"inconclusive: the schedule did not act"}
    assert {v for _, v in gated["h5"]} == {"inconclusive: the schedule did not act"}


def test_schedule_check_reads_beta_kl_and_the_share_of_the_loss(tmp_path):
    from duotune.studies.common import schedule_check

    path = tmp_path / "metrics.jsonl"
    # steps 1..6: beta 0.04 .. 0.09, per-token KL 0.01 each, |policy loss| 0.5
    recs = [{"step": s, "kl/beta": 0.03 + 0.01 * s, "kl/mean": 0.01, "loss/pg": -0.5} for s in range(1, 7)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    got = schedule_check(path, 6)
    assert got["at"] == {"2": {"kl/beta": 0.05, "kl/mean": 0.01}, "4": {"kl/beta": 0.07, "kl/mean": 0.01},
                         "6": {"kl/beta": 0.09, "kl/mean": 0.01}}
    # mean beta * KL = 0.065 * 0.01 = 6.5e-4; / 0.5 = 0.13 % < 1 %: the schedule did not act
    assert got["kl_share"] == pytest.approx(6.5e-4 / 0.5) and got["acted"] is False
    path.write_text("".join(json.dumps({**r, "kl/mean": 1.0}) + "\n" for r in recs))
    assert schedule_check(path, 6)["acted"] is True  # 0.065 / 0.5 = 13 %
    assert schedule_check(tmp_path / "none.jsonl", 6) == {"at": {"2": None, "4": None, "6": None},
                                                           "kl_share": None, "acted": False}


def test_seeds_run_each_arm_with_its_own_run_seed(warm, tmp_path):
    scale = get_scale("tiny", seeds=2)
    rec = othink.run(scale, tmp_path, tasks=("counting",), methods=("grpo_d",), warmup=warm)
    assert rec["matrix"]["models"] == ["base", "counting-grpo_d-s0", "counting-grpo_d-s1"]
    cfgs = [(tmp_path / "runs" / f"counting-grpo_d-s{k}" / "config.yaml").read_text() for k in range(2)]
    assert "seed: 0" in cfgs[0] and "seed: 1" in cfgs[1]
    # the seed reaches the sampler: the two runs drew different rollouts at their first step
    first = [[(r["id"], r["completion"]) for r in map(json.loads, (tmp_path / "runs" / f"counting-grpo_d-s{k}"
              / "rollouts" / "step-000001.jsonl").read_text().splitlines())] for k in range(2)]
    assert first[0] != first[1] and len(first[0]) == len(first[1])
    assert set(rec["schedule"]) == {"counting-grpo_d-s0", "counting-grpo_d-s1"}

"""`duotune compare` on tiny-llm: three methods x 2 steps end to end (every file written), a crashing
method recorded as failed while the others finish, resume skips finished runs, mismatched budgets are
refused with the numbers, pipeline stage steps scale to the budget by hand computation."""

from pathlib import Path

import pytest

from duotune.analysis import CompareConfig, run_compare
from duotune.analysis.plan import scale_stages
from duotune.config import load_config
from duotune.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "compare" / "tiny.yaml"
TRAINED = ["sft", "grpo", "srft"]


def _cfg(out, *extra):
    return load_config(CompareConfig, TINY, [f"output_dir={out}", f"recipes={ROOT / 'configs' / 'tiny'}",
                                             *extra])


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """base + sft, grpo, srft (2 steps each) + grpo_d, which crashes on a missing data file."""
    out = tmp_path_factory.mktemp("cmp")
    cfg = _cfg(out, "methods=[base, sft, grpo, srft, grpo_d]", "per_method={grpo_d: {data.train: /no/such.jsonl}}")
    return cfg, out / "tiny", run_compare(cfg)


def test_three_methods_end_to_end_write_every_file(compared):
    cfg, root, res = compared
    for name in ("results.json", "report.md", "report.html", "compare.yaml"):
        assert (root / name).is_file(), name
    for stem in ("accuracy_arith_vs_steps", "accuracy_arith_vs_wall", "accuracy_arith_l2_vs_steps",
                 "reward", "entropy_all", "entropy_on_policy", "response_length", "kl_trainer",
                 "srft_weights", "kl_to_initial", "dynamics_map", "intervals_arith", "intervals_arith_l2"):
        assert (root / "plots" / f"{stem}.png").read_bytes()[:4] == b"\x89PNG", stem
    # GRPO-D's schedule panel is drawn only for GRPO-D runs (grpo_d failed here; grpo's constant
    # beta is no schedule)
    assert not (root / "plots" / "grpo_d_beta.png").exists()
    html = (root / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(res["plots"]) == 14
    assert "<table>" in html and "<pre>" not in html and "| method |" not in html  # rendered, not raw
    md = (root / "report.md").read_text()
    for m in ["base", *TRAINED]:
        assert f"| {m} |" in md
    for m in TRAINED:
        e = res["methods"][m]
        assert e["status"] == "done" and e["seeds"] == [0]
        assert e["budget"]["steps"] == 2 and e["budget"]["optimizer_steps"] == 2
        curve = res["curves"][f"{m}-s0"]
        assert [p["step"] for p in curve] == [0, 1, 2]  # base point, then every eval.every=1 step
        assert set(curve[-1]["evals"]) == {"arith", "arith_l2"} and curve[-1]["evals"]["arith"]["items"] == 8
        for ev in curve[-1]["evals"].values():  # per-item scores (for paired comparisons) average to accuracy
            assert len(ev["per_item"]) == ev["items"] and all(v in (0.0, 1.0) for v in ev["per_item"])
            assert sum(ev["per_item"]) / ev["items"] == pytest.approx(ev["accuracy"])
        assert curve[-1]["eval_engine"] == "eval engine: hf (eval.engine=hf)"  # which sampler scored it
        assert set(curve[-1]["map"]) == {"demos", "model:tiny-llm"}
        assert curve[-1]["kl_to_initial"] >= 0  # k3 is never negative
        assert curve[1]["wall_s"] < curve[2]["wall_s"]  # cumulative training time
        run_dir = root / "runs" / f"{m}-s0"  # finished: resume-only files pruned, models kept
        assert not list(run_dir.glob("checkpoint-*/trainer_state*")) and not list(run_dir.glob("stage-*-init"))
        assert (run_dir / "checkpoint-000002" / "model" / "config.json").is_file()
    # Paired differences: by default every trained method against base, on every eval set, from the
    # per-item scores; each method's interval in results is the bootstrap over items and seeds.
    assert [(d["a"], d["b"], d["eval_set"]) for d in res["paired"]] == \
        [(m, "base", s) for m in TRAINED for s in ("arith", "arith_l2")]  # grpo_d failed: no pair
    for d in res["paired"]:
        a = res["curves"][f"{d['a']}-s0"][-1]["evals"][d["eval_set"]]["accuracy"]
        b = res["curves"]["base-s0"][0]["evals"][d["eval_set"]]["accuracy"]
        assert d["diff"] == pytest.approx(a - b) and d["low"] <= d["diff"] <= d["high"]
    assert "## Paired differences" in md and "| srft - base | arith |" in md
    dyn = res["dynamics"]  # the RL runs log on-policy entropy; 2 RL runs x 2 evaluated steps = 4 checkpoints
    assert set(dyn["late_entropy"]) == {"grpo", "srft"} and dyn["tracking"]["reward/mean"]["n"] == 4
    assert dyn["entropy_test"]["verdict"] != "held"  # one seed a side can never reach p <= 0.05
    assert "## Training signal against the benchmark" in md
    assert res["methods"]["sft"]["ci95"]["arith"][0] <= res["methods"]["sft"]["final"]["arith"]["mean"]
    # Step 0 of every curve is the base model's evaluation, so they all start at the same point.
    base = res["curves"]["base-s0"][0]["evals"]
    assert all(res["curves"][f"{m}-s0"][0]["evals"] == base for m in TRAINED)


def test_time_to_accuracy_target_is_best_of_reference_by_hand(compared):
    _, _, res = compared
    curves = {m: res["curves"][f"{m}-s0"] for m in TRAINED}
    # sft_then_grpo is not compared, so the target is the best accuracy of any trained method.
    best = max(p["evals"]["arith"]["accuracy"] for c in curves.values() for p in c)
    tta = res["time_to_accuracy"]
    assert tta["target"] == best and tta["eval_set"] == "arith"
    for m, c in curves.items():
        first = next((p for p in c if p["evals"]["arith"]["accuracy"] >= best), None)
        assert tta["methods"][m] == (None if first is None else {"step": first["step"], "wall_s": first["wall_s"]})
    assert tta["ratio"]["wall_time"] is None  # sft_then_grpo absent


def test_crashing_method_is_recorded_failed_and_others_finish(compared):
    _, root, res = compared
    assert res["failed"] == ["grpo_d"]
    err = res["methods"]["grpo_d"]["errors"]["0"]
    assert "/no/such.jsonl" in err
    assert "## Failed" in (root / "report.md").read_text()
    assert all(res["methods"][m]["status"] == "done" for m in TRAINED)


def test_resume_skips_finished_runs(compared, monkeypatch):
    cfg, root, _ = compared
    import duotune.trainers

    calls = []
    monkeypatch.setattr(duotune.trainers, "train", lambda c: calls.append(c.run.name) or 1 / 0)
    # A result file lost after its run finished: the run folder's checkpoint and curve are reused.
    (root / "results" / "srft-s0.json").unlink()
    res = run_compare(cfg)
    assert calls == ["grpo_d-s0"]  # only the failed method is tried again
    assert [res["methods"][m]["status"] for m in TRAINED] == ["done"] * 3
    assert [p["step"] for p in res["curves"]["srft-s0"]] == [0, 1, 2]
    assert "ZeroDivisionError" in res["methods"]["grpo_d"]["errors"]["0"]


def test_report_only_trains_nothing_and_shows_seeds(compared, monkeypatch, tmp_path):
    cfg, root, _ = compared
    import duotune.trainers

    monkeypatch.setattr(duotune.trainers, "train", lambda c: 1 / 0)
    res = run_compare(cfg.model_copy(update={"seeds": [0, 1]}), report_only=True)
    assert res["methods"]["sft"]["seeds"] == [0]  # seed 1 was never run and nothing was trained
    import yaml

    assert yaml.safe_load((root / "compare.yaml").read_text())["seeds"] == [0, 1]  # the report's config
    assert "| sft | " in (md := (root / "report.md").read_text()) and " | seeds | train s | status |" in md
    assert [ln for ln in md.splitlines() if ln.startswith("| srft |")][0].split(" | ")[-3] == "0"
    with pytest.raises(ConfigError, match="no results"):
        run_compare(cfg.model_copy(update={"output_dir": str(tmp_path)}), report_only=True)


def test_analyze_cli_redraws_map_and_measures_shift(compared, tmp_path):
    import argparse
    import json

    from duotune.analysis import add_analyze_arguments, run_analyze_command

    _, root, res = compared
    parser = argparse.ArgumentParser()
    add_analyze_arguments(parser)
    assert run_analyze_command(parser.parse_args(["map", "--compare", str(root), "--out", str(tmp_path)])) == 0
    drawn = json.loads((tmp_path / "dynamics_map.json").read_text())
    assert drawn["references"] == ["demos", "model:tiny-llm"]
    assert drawn["paths"]["srft-s0"][-1]["map"] == res["curves"]["srft-s0"][-1]["map"]
    assert (tmp_path / "dynamics_map.png").is_file()
    sft_model = root / "runs" / "sft-s0" / "checkpoint-000002" / "model"
    args = parser.parse_args(["shift", "--initial", "tiny-llm", "--trained", str(sft_model), "--threshold",
                              "0.0", "--limit", "2", "--out", str(tmp_path)])
    assert run_analyze_command(args) == 0
    shift = json.loads((tmp_path / "token_shift.json").read_text())
    assert shift["fraction"] > 0 and shift["tokens"] > 0  # two SFT steps at lr 1e-3 move the demos
    assert (tmp_path / "token_shift.png").is_file()


def test_mismatched_budget_refused_with_numbers(tmp_path):
    cfg = _cfg(tmp_path, "per_method={srft: {num_iterations: 2}, sft: {prompts_per_step: 4}}")
    with pytest.raises(ConfigError) as e:
        run_compare(cfg)
    msg = str(e.value)
    assert "budget: 2 steps x 2 prompts, G=4, 1 update(s)/step = 2 optimizer steps" in msg
    assert "srft: 4 optimizer steps, srft: 2 updates/step" in msg
    assert "sft: sft: 4 prompts/step" in msg
    assert not (tmp_path / "tiny" / "results").exists()  # refused before any training


def test_pipeline_stages_scale_to_budget():
    # 60:40 over 18 steps: 1 each + 16 shared as 9.6 / 6.4 -> 10 / 7, the larger remainder gets the 18th.
    assert scale_stages([60, 40], 18) == [11, 7]
    assert scale_stages([2, 1], 2) == [1, 1]
    assert scale_stages([1, 1], 12) == [6, 6]
    with pytest.raises(ConfigError, match="smaller than the 2 stages"):
        scale_stages([1, 1], 1)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="per_method names"):
        _cfg(tmp_path, "per_method={lufy: {steps: 3}}")
    with pytest.raises(ConfigError, match=r"pairs name \['srtf'\]"):
        _cfg(tmp_path, "methods=[base, sft, srft]", "pairs=[[srtf, sft]]")
    assert _cfg(tmp_path, "methods=[base, sft]", "pairs=[[srft, sft]]").pairs == [("srft", "sft")]  # not run: left out
    with pytest.raises(ConfigError, match="eval.engine"):
        _cfg(tmp_path, "eval.engine=vlm")
    with pytest.raises(ConfigError, match="exactly one of generate, benchmark, file"):
        _cfg(tmp_path, "eval_sets=[{name: x, benchmark: gsm8k, file: a.jsonl}]")
    cfg = _cfg(tmp_path, "methods=[base, nope]")
    with pytest.raises(ConfigError, match="no recipe"):
        run_compare(cfg)
    assert not (tmp_path / "tiny" / "results").exists()  # nothing trained for a refused comparison


def test_accuracy_vs_wall_averages_seeds_per_step():
    from duotune.analysis.plots import accuracy_series

    def run(seed, walls, accs):
        return {"method": "srft", "seed": seed, "curve": [{"step": s, "wall_s": w, "evals": {"a": {"accuracy": a}}}
                                                          for s, w, a in zip((0, 5, 10), walls, accs)]}
    done = [run(0, (0, 225, 413), (0.44, 0.48, 0.735)), run(1, (0, 190, 423), (0.44, 0.665, 0.685))]
    xs, ys = accuracy_series(done, "a", "wall_s")["srft"]
    assert xs == pytest.approx([0, 207.5, 418]) and ys == pytest.approx([0.44, 0.5725, 0.71])
    assert accuracy_series(done, "a", "step")["srft"][0] == [0, 5, 10]



def test_per_method_stages_are_proportions_of_the_budget(tmp_path):
    # configs/compare/arithmetic.yaml gives the pipelines' stages 5 + 5 in per_method; a smaller budget
    # (README commands shrunk, or budget.steps=4 by hand) scales them instead of failing the budget check.
    from duotune.analysis.plan import method_config

    cfg = _cfg(tmp_path, "budget.steps=4", "methods=[base, sft_then_grpo]",
               "per_method={sft_then_grpo: {stages: [{method: sft, steps: 5}, {method: grpo, steps: 5}]}}")
    tcfg = method_config(cfg, "sft_then_grpo", "x.jsonl", 0, tmp_path)
    assert [(s.method, s.steps) for s in tcfg.stages] == [("sft", 2), ("grpo", 2)]


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "compare").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_comparison_plans_with_one_budget(path, tmp_path):
    """Each configs/compare/*.yaml loads, names only runnable pairs, and every method's recipe resolves
    under its budget (the cross-method budget check of `plan` passes) without training anything."""
    from duotune.analysis.plan import plan

    cfg = load_config(CompareConfig, path, [f"recipes={ROOT / 'configs'}", "seeds=[0, 1]"])
    configs = plan(cfg, str(tmp_path / "train.jsonl"), tmp_path / "runs")
    assert set(configs) == set(cfg.methods) - {"base"} and all(len(c) == 2 for c in configs.values())
    assert {m for pair in cfg.pairs for m in pair} <= set(cfg.methods)


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "compare").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_comparison_can_generate_its_sets(path):
    """Every generated set of a shipped comparison fits its task's item space: n distinct items (a
    level-1 arithmetic test split holds only 332, so 400 of them cannot be drawn)."""
    from duotune.tasks.base import make_rows

    cfg = load_config(CompareConfig, path, [f"recipes={ROOT / 'configs'}"])
    sources = [cfg.data.generate] + [s.generate for s in cfg.eval_sets]
    for src in (s for s in sources if s is not None):
        rows = make_rows(src.task, src.n, src.seed, src.split, **src.params)
        assert len(rows) == src.n


def test_the_evaluation_asks_for_the_training_engines_kv_cache_size(tmp_path, monkeypatch):
    """measure() scores with the methods' rollout.vllm.cpu_kv_cache_gib (the default when common is
    silent), so the evaluation's vLLM engine is the training chunk's, not a second one."""
    from duotune.analysis import compare, evalsets

    proto = load_config(CompareConfig, ROOT / "configs" / "compare" / "protocol_arith.yaml",
                        [f"recipes={ROOT / 'configs'}"])
    assert proto.kv_cache_gib() == 1
    cfg = load_config(CompareConfig, ROOT / "configs" / "compare" / "tiny.yaml",
                      [f"recipes={ROOT / 'configs' / 'tiny'}", f"output_dir={tmp_path}", "map.references=[]"])
    assert cfg.kv_cache_gib() == 2
    seen = []
    monkeypatch.setattr(evalsets, "score", lambda *a, **kw: seen.append(kw["kv_cache_gib"]) or {"evals": {}})

    class Ctx:
        def __init__(self, cfg):
            self.cfg, self.sets = cfg, []

    for c in (cfg, cfg.model_copy(update={"common": {**cfg.common, "rollout.vllm.cpu_kv_cache_gib": 3}})):
        compare.measure(Ctx(c), None, 0, 0, 0.0, "base")
    assert seen == [2, 3]


def test_the_initial_model_is_not_held_while_a_chunk_trains(tmp_path, monkeypatch):
    """The KL probe's initial model is dropped before each training chunk (two workers share one
    machine's memory) and loaded again for the next probe."""
    import duotune.trainers as trainers
    from duotune.analysis import compare

    contexts, held, train = [], [], trainers.train
    init = compare.Context.__init__

    def spy_init(self, *a, **kw):
        init(self, *a, **kw)
        contexts.append(self)

    def spy_train(cfg):
        held.append(contexts[-1]._initial is not None)
        return train(cfg)

    monkeypatch.setattr(compare.Context, "__init__", spy_init)
    monkeypatch.setattr(trainers, "train", spy_train)
    run_compare(_cfg(tmp_path, "methods=[base, sft]"), report=False)
    assert held == [False, False]  # two chunks (eval every step), neither with the initial model loaded
    assert contexts[-1]._initial is not None  # the last probe loaded it again

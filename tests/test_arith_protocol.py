"""`python -m duotune.studies.arith_protocol`: regime b trains the word-problem teacher once, builds its
pool once from the comparison's own training rows, and hands the comparison the pool instead of the
generated rows; regime a runs the comparison as configured. The comparison itself (duotune.demo) and
the pool's sampling (tests/test_teacher_pool.py) are stubbed here; the teacher really trains (tiny-llm)."""

import json
from pathlib import Path

import pytest

from duotune import demo
from duotune.analysis import CompareConfig
from duotune.config import load_config
from duotune.data import teacher_pool
from duotune.errors import ConfigError
from duotune.studies import arith_protocol

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "compare" / "tiny.yaml"


@pytest.fixture
def stubs(monkeypatch):
    calls = {"demo": [], "pool": [], "identical": 0.25}

    def fake_pool(model, data, out, **kw):
        # the comparison's engine and KV size (a bound method here once sent vLLM's start to the HF fallback)
        assert kw["engine"] == "auto" and type(kw["kv_cache_gib"]) is int
        calls["pool"].append((model, Path(data), Path(kw["prompts"])))
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "data.jsonl").write_text(Path(data).read_text())
        s = {"data": str(out / "data.jsonl"), "sample_correct_rate": 0.5, "kept": 16, "questions": 16,
             "mean_demo_tokens_teacher": 30.0, "mean_demo_tokens_programmatic": 20.0,
             "identical_to_programmatic": calls["identical"]}
        (out / "teacher_pool.json").write_text(json.dumps(s))
        return s

    monkeypatch.setattr(teacher_pool, "build_pool", fake_pool)
    monkeypatch.setattr(demo, "main", lambda argv: calls["demo"].append(argv) or 0)
    return calls


def test_regime_b_trains_the_teacher_once_and_compares_on_its_pool(stubs, tmp_path, monkeypatch):
    args = ["--regime", "b", "--config", str(TINY), "--teacher-steps", "1", "--teacher-prompts", "2",
            "--store", str(tmp_path / "store"), f"output_dir={tmp_path}", f"recipes={ROOT / 'configs' / 'tiny'}"]
    assert arith_protocol.main(args) == 0
    teacher = tmp_path / "tiny_teacher" / "teacher"
    rows = [json.loads(x) for x in (teacher / "data" / "data.jsonl").read_text().splitlines()]
    # the comparison's own rows, demos in prose (docs/protocol.md: session 13's word-problem teacher wrote
    # the program's template back)
    assert len(rows) == 16 and all(r["params"]["style"] == "prose" and not r["word"] for r in rows)
    assert all(r["demo"].startswith("Multiplication comes before") for r in rows)
    assert [r["question"] for r in rows] == [json.loads(x)["question"] for x in
                                             (tmp_path / "tiny" / "data" / "train" / "data.jsonl").read_text().splitlines()]
    model = teacher / "run" / "checkpoint-000001" / "model"
    assert (model / "config.json").is_file()
    assert "seed: 100" in (teacher / "run" / "config.yaml").read_text()
    # the pool is written for the comparison's own rows by the trained teacher, prompted as it was trained
    assert stubs["pool"] == [(str(model), tmp_path / "tiny" / "data" / "train" / "data.jsonl",
                              teacher / "data" / "data.jsonl")]
    (argv,) = stubs["demo"]
    pool = teacher / "pool" / "data.jsonl"
    assert argv[argv.index("--run-dir") + 1] == str(tmp_path / "tiny_teacher")
    assert argv[-2:] == [f"data.file={pool}", "data.generate=null"]
    cfg = load_config(CompareConfig, TINY, argv[argv.index("--jobs") + 2:])  # the overrides the demo gets
    assert cfg.data.file == str(pool) and cfg.data.generate is None
    # re-running trains and samples nothing again
    import duotune.trainers as trainers

    monkeypatch.setattr(trainers, "train", lambda cfg: pytest.fail("the teacher was trained again"))
    assert arith_protocol.main(args) == 0
    assert len(stubs["pool"]) == 1 and len(stubs["demo"]) == 2
    # the pool went into the store; a fresh machine (no run folders) takes it from there, trains no teacher
    assert (tmp_path / "store" / "tiny_teacher" / "pool" / "data.jsonl").read_text() == pool.read_text()
    fresh = tmp_path / "fresh"
    assert arith_protocol.main([f"output_dir={fresh}" if a.startswith("output_dir=") else a for a in args]) == 0
    new_pool = fresh / "tiny_teacher" / "teacher" / "pool"
    assert json.loads((new_pool / "teacher_pool.json").read_text())["data"] == str(new_pool / "data.jsonl")
    assert stubs["demo"][-1][-2] == f"data.file={new_pool / 'data.jsonl'}" and len(stubs["pool"]) == 1


def test_regime_b_refuses_a_pool_that_copies_the_programs_demos(stubs, tmp_path):
    """Session 13's first teacher wrote 97.8 % of its kept demos word for word as the program: regime (b)
    on that pool would test regime (a) again on fewer rows, so the comparison is refused, saying why."""
    stubs["identical"] = 0.978
    args = ["--regime", "b", "--config", str(TINY), "--teacher-steps", "1", "--teacher-prompts", "2",
            "--store", str(tmp_path / "store"), f"output_dir={tmp_path}", f"recipes={ROOT / 'configs' / 'tiny'}"]
    with pytest.raises(ConfigError, match=r"97.8 % of the kept demos are the program's own.*gate is < 50 %"):
        arith_protocol.main(args)
    assert stubs["demo"] == []
    assert not (tmp_path / "store" / "tiny_teacher").exists()  # a pool that fails never reaches the store


def test_regime_a_runs_the_comparison_as_configured(stubs, tmp_path):
    assert arith_protocol.main(["--regime", "a", "--config", str(TINY), "--store", str(tmp_path / "store"),
                                f"output_dir={tmp_path}"]) == 0
    (argv,) = stubs["demo"]
    assert argv[argv.index("--run-dir") + 1] == str(tmp_path / "tiny")
    assert not any(a.startswith("data.file=") for a in argv) and not stubs["pool"]


def test_pilot_rule_counts_the_curves_still_moving_at_step_30():
    rule = arith_protocol.pilot_rule
    moving = {"sft": {20: 75.75, 30: 81.25}, "grpo": {20: 60.0, 30: 62.0}, "srft": {20: 70.0, 30: 71.75}}
    got = rule(moving)
    assert got["gains"] == {"sft": 5.5, "grpo": 2.0, "srft": 1.75} and got["moving"] == 2 and got["T"] == 60
    assert rule({**moving, "grpo": {20: 60.0, 30: 61.5}})["T"] == 30  # one curve moving: 30 is enough
    # curves still short of step 30 leave the decision open unless two already decide it
    assert rule({"sft": {20: 75.0, 30: 81.0}, "grpo": {10: 50.0}, "srft": {20: 1.0}})["T"] is None
    assert rule({"sft": {20: 75.0, 30: 81.0}, "grpo": {20: 50.0, 30: 55.0}, "srft": {10: 1.0}})["T"] == 60


def test_pilot_decision_reads_the_curves_on_disk(stubs, tmp_path):
    root = tmp_path / "tiny"
    for m, accs in {"sft": [0.5, 0.6, 0.7], "grpo": [0.4, 0.45, 0.46], "srft": [0.3, 0.4, 0.5]}.items():
        run = root / "runs" / f"{m}-s0"
        run.mkdir(parents=True)
        run.joinpath("curve.jsonl").write_text("".join(
            json.dumps({"step": 10 * (i + 1), "evals": {"arith": {"accuracy": a}}}) + "\n" for i, a in enumerate(accs)))
    args = ["--regime", "pilot", "--decide", "--config", str(TINY), f"output_dir={tmp_path}"]
    assert arith_protocol.main(args) == 0 and not stubs["demo"]
    got = json.loads((root / "pilot_decision.json").read_text())
    assert got["gains"] == pytest.approx({"sft": 10.0, "grpo": 1.0, "srft": 10.0}) and got["T"] == 60
    assert got["curves"]["grpo"] == pytest.approx({"10": 40.0, "20": 45.0, "30": 46.0})


def _result(path, status="done", acc=0.5):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"status": status, "curve": [{"step": 0, "acc": acc}]}))


def test_sync_results_copies_finished_results_both_ways_and_never_overwrites(tmp_path):
    root, store = tmp_path / "run", tmp_path / "store"
    _result(root / "results" / "sft-s0.json")
    _result(root / "results" / "grpo-s0.json", status="failed")
    _result(store / "results" / "srft-s1.json", acc=0.7)
    _result(store / "results" / "luffy-s0.json", status="failed")
    _result(root / "results" / "base-s0.json", acc=0.36)
    _result(store / "results" / "base-s0.json", acc=0.40)
    moved = arith_protocol.sync_results(root, store)
    assert moved == {"to_store": ["sft-s0.json"], "from_store": ["srft-s1.json"], "differ": ["base-s0.json"]}
    assert sorted(p.name for p in (store / "results").glob("*.json")) == ["base-s0.json", "luffy-s0.json",
                                                                          "sft-s0.json", "srft-s1.json"]
    assert sorted(p.name for p in (root / "results").glob("*.json")) == ["base-s0.json", "grpo-s0.json",
                                                                         "sft-s0.json", "srft-s1.json"]
    assert json.loads((store / "results" / "base-s0.json").read_text())["curve"][0]["acc"] == 0.40  # kept both
    assert json.loads((root / "results" / "base-s0.json").read_text())["curve"][0]["acc"] == 0.36
    assert arith_protocol.sync_results(root, store) == {"to_store": [], "from_store": [],
                                                        "differ": ["base-s0.json"]}


def test_sync_results_carries_a_finished_runs_training_log_both_ways(tmp_path):
    """The report's entropy test (H3), its length/reward correlations (H7) and the training plots read
    runs/<method>-s<seed>/metrics.jsonl: a result restored without it loses them on a fresh checkout."""
    root, store = tmp_path / "run", tmp_path / "store"
    for side, stem, status in ((root, "grpo-s0", "done"), (root, "srft-s0", "failed"), (store, "sft-s1", "done")):
        _result(side / "results" / f"{stem}.json", status=status)
        run = side / "runs" / stem
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "entropy/on_policy": 0.5}) + "\n")
        (run / "config.yaml").write_text(f"method: {stem}\n")
        (run / "checkpoint-000030").mkdir()  # weights stay where they are
    arith_protocol.sync_results(root, store)
    for side, stem in ((store, "grpo-s0"), (root, "sft-s1")):
        assert sorted(p.name for p in (side / "runs" / stem).iterdir()) == ["config.yaml", "metrics.jsonl"]
        assert json.loads((side / "runs" / stem / "metrics.jsonl").read_text())["entropy/on_policy"] == 0.5
    assert not (store / "runs" / "srft-s0").exists()  # an unfinished run's log stays with it
    # a restored result whose log an earlier version of the store never kept: nothing to copy, no error
    _result(store / "results" / "luffy-s0.json")
    arith_protocol.sync_results(root, store)
    assert (root / "results" / "luffy-s0.json").is_file() and not (root / "runs" / "luffy-s0").exists()


def test_regime_a_resumes_from_the_store_and_saves_what_it_finished(tmp_path, monkeypatch):
    store = tmp_path / "store" / "tiny" / "results"
    _result(store / "sft-s0.json")
    seen = []

    def fake_demo(argv):
        root = Path(argv[argv.index("--run-dir") + 1])
        seen.append(sorted(p.name for p in (root / "results").glob("*.json")))
        _result(root / "results" / "grpo-s0.json")  # what this session's workers finished
        return 0

    monkeypatch.setattr(demo, "main", fake_demo)
    args = ["--regime", "a", "--config", str(TINY), "--store", str(tmp_path / "store"), f"output_dir={tmp_path}"]
    assert arith_protocol.main(args) == 0
    assert seen == [["sft-s0.json"]]  # the workers found the earlier session's result and skip it
    assert sorted(p.name for p in store.glob("*.json")) == ["grpo-s0.json", "sft-s0.json"]
    assert arith_protocol.main([*args, "--sync"]) == 0 and len(seen) == 1  # --sync trains nothing


def test_regime_b_teacher_only_builds_the_pool_and_sync_trains_nothing(stubs, tmp_path, monkeypatch):
    import duotune.trainers as trainers

    base = ["--regime", "b", "--config", str(TINY), "--teacher-steps", "1", "--teacher-prompts", "2",
            "--store", str(tmp_path / "store"), f"recipes={ROOT / 'configs' / 'tiny'}"]
    train = trainers.train
    monkeypatch.setattr(trainers, "train", lambda cfg: pytest.fail("--sync trained the teacher"))
    assert arith_protocol.main([*base, "--sync", f"output_dir={tmp_path / 'a'}"]) == 0
    assert not stubs["pool"] and not stubs["demo"] and not (tmp_path / "store" / "tiny_teacher").exists()
    monkeypatch.setattr(trainers, "train", train)
    assert arith_protocol.main([*base, "--teacher-only", f"output_dir={tmp_path / 'a'}"]) == 0
    assert len(stubs["pool"]) == 1 and not stubs["demo"]
    assert (tmp_path / "store" / "tiny_teacher" / "pool" / "teacher_pool.json").is_file()

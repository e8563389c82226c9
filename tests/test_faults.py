"""Fault drills (issue 16): a real tiny GRPO run (tiny-llm, configs/tiny/grpo.yaml, KL on) is SIGKILLed
at seeded points (mid-step, mid-metrics-line, at each stage of a checkpoint save and of pruning) and
resumed; it must end bit-exact with an uninterrupted run, every step logged once, no leftovers. Plus a
fuzz of the reward functions and the verifier with generated hostile strings: a score in range or
None, within the timeout, never an exception. The slow drill kills at every point and count."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from duotune.config import load_config
from duotune.rewards import GradingPool, get_reward
from duotune.trainers import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "tiny" / "grpo.yaml"
STEPS = 4
# How often each kill point is reached in a 4-step run saving every step and keeping 2 checkpoints.
REACHED = {"step": 4, "metrics": 4, "model": 4, "state": 4, "manifest": 4, "rename": 4, "renamed": 4,
           "prune": 2}
KEYS = ("loss/total", "reward/mean", "kl/mean", "train/grad_norm", "entropy/mean")


def run_args(out: Path, data: Path) -> list[str]:
    return [f"data.train={data}", f"run.output_dir={out}", "run.name=r", "run.progress=false",
            "run.plots=false", "reward.names=[toy_rewards:digit_share]", "run.resume=auto",
            f"steps={STEPS}", "run.save_every=1", "run.keep_last=2"]


def kill_at(point: str, n: int, out: Path, data: Path) -> int:
    """Run `duotune train` in a fresh interpreter that SIGKILLs itself the n-th time it reaches `point`."""
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "fault_child.py"), point, str(n), "train",
                           str(CONFIG), *run_args(out, data)], env=env, capture_output=True, text=True,
                          timeout=300)
    return proc.returncode


def outcome(run_dir: Path) -> tuple[dict[str, torch.Tensor], list[tuple], list[str]]:
    """Final weights, the logged (step, values) records, and the folder's entries."""
    weights = load_file(run_dir / f"checkpoint-{STEPS:06d}" / "model" / "model.safetensors")
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [(r["step"], *(r.get(k) for k in KEYS)) for r in records]
    return weights, logged, sorted(p.name for p in run_dir.iterdir())


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_file):
    out = tmp_path_factory.mktemp("reference")
    train(load_config(TrainConfig, CONFIG, run_args(out, data_file)))
    return outcome(out / "r")


def drill(point: str, n: int, out: Path, data: Path, reference) -> None:
    assert kill_at(point, n, out, data) == -signal.SIGKILL, f"{point}:{n} did not die where planned"
    train(load_config(TrainConfig, CONFIG, run_args(out, data)))
    weights, logged, entries = outcome(out / "r")
    assert weights.keys() == reference[0].keys()
    assert all(torch.equal(weights[k], reference[0][k]) for k in weights), f"{point}:{n} weights differ"
    assert logged == reference[1], f"{point}:{n}: metrics differ"  # each step once, the same values
    assert entries == reference[2], f"{point}:{n}: leftovers {set(entries) ^ set(reference[2])}"


@pytest.mark.parametrize("point", ["metrics", "state", "rename", "prune"])
def test_a_killed_run_resumes_bit_exact(tmp_path, data_file, reference, point):
    n = random.Random(point).randint(1, REACHED[point])  # fixed seed per point
    drill(point, n, tmp_path, data_file, reference)


@pytest.mark.slow
@pytest.mark.parametrize("point,n", [(p, n) for p, k in REACHED.items() for n in range(1, k + 1)])
def test_every_kill_point_resumes_bit_exact(tmp_path, data_file, reference, point, n):
    drill(point, n, tmp_path, data_file, reference)


def hostile_strings(seed: int, count: int) -> list[str]:
    """Completions built from fragments that broke or hung graders: huge integers, deep or unbalanced
    braces, towers of exponents, fullwidth / Arabic-Indic digits, null bytes, bidi controls, lone
    surrogates, endless tags; wrapped in the answer forms the extractors look for."""
    rng = random.Random(seed)

    def digits(base: int) -> str:
        return "".join(chr(base + rng.randrange(10)) for _ in range(rng.randrange(1, 40)))

    fragments = [
        lambda: "9" * rng.choice([4301, 20000, 100000]),
        lambda: "-" + "1" * rng.randrange(4000, 9000) + ".0",
        lambda: "{" * (d := rng.choice([50, 2000, 30000])) + "7" + "}" * rng.choice([d, d // 2, 0]),
        lambda: "\\boxed{" * rng.choice([10, 500, 5000]) + "3",
        lambda: "9^{" * rng.randrange(3, 8) + "9" + "}" * 8,
        lambda: digits(0xFF10),  # fullwidth
        lambda: digits(0x0660),  # Arabic-Indic
        lambda: digits(0x06F0),  # extended Arabic-Indic
        lambda: "\x00" * rng.randrange(1, 50) + "1\x002",
        lambda: "\u202e\u200b\ufeff" * rng.randrange(1, 300),
        lambda: "\udcff\ud800",
        lambda: "\\frac{" + "1" * rng.randrange(500, 3000) + "}{" + "3" * rng.randrange(500, 3000) + "}",
        lambda: "<answer>" * rng.randrange(1, 2000) + "</answer>" * rng.randrange(0, 3),
        lambda: "[" + ", ".join(str(rng.uniform(-1e9, 1e9)) for _ in range(rng.randrange(4, 400))) + "]",
        lambda: "1," * rng.randrange(1000, 4000) + "1",
        lambda: "\\sqrt{" * 200 + "2" + "}" * 200,
        lambda: "x" * rng.randrange(1, 200000),
        lambda: "(" + "A" * rng.randrange(1, 5) + ")",
    ]
    wrappers = [lambda s: s, lambda s: f"\\boxed{{{s}}}", lambda s: f"<answer>{s}</answer>",
                lambda s: f"<think>{s}</think> <answer>{s}</answer>", lambda s: f"The answer is {s}.",
                lambda s: f"#### {s}"]
    out = []
    for _ in range(count):
        body = "".join(rng.choice(fragments)() for _ in range(rng.randrange(1, 4)))
        out.append(rng.choice(wrappers)(body))
    return out


def test_rewards_and_verifier_score_hostile_strings_in_range_without_hanging():
    comps = hostile_strings(seed=16, count=24)
    n = len(comps)
    cases = [("math", {"answer": ["5"] * n}, 1.0), ("accuracy_format", {"answer": ["5"] * n}, 2.0),
             ("digit", {"answer": ["7"] * n}, 1.0), ("mcq", {"answer": ["A"] * n}, 1.0),
             ("iou", {"answer": ["[0.1, 0.1, 0.5, 0.5]"] * n}, 1.0), ("boxed_format", {}, 1.0),
             ("format_think_answer", {}, 1.0),
             ("mixed", {"answer": ["7", "A", "5", "[0, 0, 1, 1]"] * (n // 4),
                        "reward_type": ["digit", "mcq", "math", "iou"] * (n // 4)}, 1.0)]
    with GradingPool(2, timeout_s=1.0) as pool:
        budget = n * pool.watchdog_s / pool.num_workers + 10  # every item timing out, plus start-up
        for name, columns, top in cases:
            params = {"pool": pool} if name in ("math", "accuracy_format", "mixed") else {}
            start = time.monotonic()
            scores = get_reward(name, **params)(comps, **columns)
            assert time.monotonic() - start < budget, name
            assert len(scores) == n and all(s is None or 0.0 <= s <= top for s in scores), (name, scores)
        # The verifier itself, hostile on both sides (gold included): 1, 0 or None, never an error.
        jobs = [(c[:5000], g, pool.inner_seconds) for c, g in zip(comps, hostile_strings(seed=61, count=n))]
        outs = pool.map("duotune.rewards.verify:verify_answer", jobs)
    assert all(o.error is None and (o.timed_out or o.value in (0.0, 1.0, None)) for o in outs), outs

"""Data-parallel and sharded training through accelerate, 2 CPU processes over gloo (issue 15 item 4).

Each test starts the ranks the way a user does, `accelerate launch --config_file configs/accelerate/
<file> --num_processes 2 ...`, and compares the consolidated checkpoint with a one-process run over
the same global batch: SFT on tiny-llm with 2 prompts per rank vs 4 in one process. The toy rows
all have the same token count, so a rank's token-mean loss averaged over the ranks is the global
token mean and the two runs take the same steps up to fp32 rounding.

Tolerance: the gradients differ only in summation order (the ranks' two halves are averaged instead
of summed in one batch), ~1e-7 relative in fp32. After 3 AdamW steps the largest weight difference
to the one-process run, measured here, is 2.0e-7 for DDP and FSDP2, 4.0e-7 for ZeRO-2 and 2.9e-6 for
ZeRO-3 (its partitioned reduction rounds differently), while the weights move by up to 3.0e-3 and a
run that trains on half the global batch (a rank without the other's gradients) ends 6.0e-3 away.
TOL = 1e-5 sits between the two with margin on both sides.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from duotune.config import load_config
from duotune.trainers import TrainConfig, train
from duotune.trainers.optim import prompt_indices

ROOT = Path(__file__).resolve().parents[1]
SFT = ROOT / "configs" / "tiny" / "sft.yaml"
ACCELERATE = ROOT / "configs" / "accelerate"
STEPS = 3
TOL = 1e-5


def _overrides(out: Path, data: Path, name: str, per_rank: int) -> list[str]:
    # token_budget=1 puts every row in its own micro-batch: 2 per rank, so the two-pass replay and
    # the no-sync accumulation run on every step.
    return [f"data.train={data}", f"run.output_dir={out}", f"run.name={name}", "run.progress=false",
            "run.plots=false", f"steps={STEPS}", f"prompts_per_step={per_rank}", "compute.token_budget=1",
            "compute.dtype=float32"]


def _env(tmp_path: Path, gpu: bool = False) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf"),  # no default accelerate config
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    if not gpu:  # CPU ranks over gloo, also on a machine that has GPUs
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _launch(tmp_path: Path, config: str, args: list[str], timeout: int = 240, gpu: bool = False) -> str:
    """`accelerate launch --config_file configs/accelerate/<config> --num_processes 2 ARGS`; its output."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE / config),
           "--num_processes", "2", *args]
    env = _env(tmp_path, gpu)
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    return text


def _weights(run: Path, step: int = STEPS) -> dict[str, torch.Tensor]:
    return load_file(str(run / f"checkpoint-{step:06d}" / "model" / "model.safetensors"))


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert sorted(a) == sorted(b)
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, data_file):
    """The reference: one process, 4 prompts per step (the global batch of 2 ranks x 2)."""
    out = tmp_path_factory.mktemp("single")
    train(load_config(TrainConfig, SFT, _overrides(out, data_file, "single", 4)))
    return out / "single"


# Counts the DDP bucket all-reduces of every step, then runs the CLI exactly as `-m duotune.cli` does.
DDP_WORKER = textwrap.dedent("""
    import json, os, sys
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    import duotune.trainers.loop as loop
    from duotune.cli import main

    out, calls, at = sys.argv[1], [], {"step": 0}
    prepare, train_step = loop.prepare, loop.train_step

    def counting(state, bucket):
        calls.append([at["step"], bucket.index()])
        return allreduce_hook(None, bucket)

    def prepare_and_count(*args, **kwargs):
        par, opt = prepare(*args, **kwargs)
        par.model.register_comm_hook(None, counting)
        return par, opt

    def step_and_mark(st, step):
        at["step"] = step
        return train_step(st, step)

    loop.prepare, loop.train_step = prepare_and_count, step_and_mark
    rc = main(sys.argv[2:])
    with open(os.path.join(out, f"allreduce-{os.environ['RANK']}.json"), "w") as f:
        json.dump(calls, f)
    sys.stdout.flush()
    os._exit(rc)
""")


def test_ddp_from_the_multi_cpu_config_equals_one_process_on_the_global_batch(tmp_path, data_file, one_process):
    worker = tmp_path / "worker.py"
    worker.write_text(DDP_WORKER)
    log = _launch(tmp_path, "multi_cpu.yaml", [str(worker), str(tmp_path), "train", str(SFT),
                                               *_overrides(tmp_path, data_file, "ddp", 2)])
    assert "world size 2 (ddp, backend gloo)" in log  # two ranks, joined over gloo, logged at start
    run = tmp_path / "ddp"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    cfg = load_config(TrainConfig, SFT, [f"data.train={data_file}"])
    for step, rec in enumerate(records):
        r0, r1 = rec["data/rows_by_rank"]  # what each rank actually trained on
        assert len(r0) == len(r1) == 2 and not set(r0) & set(r1)
        assert sorted(r0 + r1) == sorted(prompt_indices(8, 4, step, 0, 1, cfg.run.seed, cfg.data.shuffle))
    single, ddp = _weights(one_process), _weights(run)
    assert _max_diff(single, ddp) < TOL
    assert _max_diff(single, _weights_at_start()) > 100 * TOL  # the comparison is not vacuous
    # Two micro-batches per rank and step, yet every gradient bucket is all-reduced once per step.
    for rank in (0, 1):
        calls = json.loads((tmp_path / f"allreduce-{rank}.json").read_text())
        per_step = [[b for s, b in calls if s == step] for step in range(STEPS)]
        assert all(buckets and len(buckets) == len(set(buckets)) for buckets in per_step), per_step


def _weights_at_start(model: str = "tiny-llm") -> dict[str, torch.Tensor]:
    """The module's own state dict (names as the model has them) of an alias or a saved folder."""
    from duotune.models import load_model

    return dict(load_model(model, device="cpu").model.state_dict())


SHARDED_WORKER = textwrap.dedent("""
    import os, sys
    from duotune.config import load_config
    from duotune.trainers import TrainConfig, train

    sft, out, data = sys.argv[1:4]
    base = [f"data.train={data}", f"run.output_dir={out}", "run.progress=false", "run.plots=false",
            "steps=3", "prompts_per_step=2", "compute.token_budget=1", "compute.dtype=float32"]
    train(load_config(TrainConfig, sft, base + ["run.name=full"]))
    train(load_config(TrainConfig, sft, base + ["run.name=cut", "run.stop_after=2"]))
    train(load_config(TrainConfig, sft, base + ["run.name=cut", "run.resume=auto"]))
    if len(sys.argv) > 4:  # VLMs: `generate` encodes the images outside the model's forward
        grpo, images = sys.argv[4:6]
        for model in ("tiny-llava", "tiny-qwen2.5-vl"):
            train(load_config(TrainConfig, grpo, [
                f"model={model}", f"data.train={images}", f"run.output_dir={out}", f"run.name={model}",
                "run.progress=false", "run.plots=false", "steps=1", "prompts_per_step=1",
                "rollout.max_completion_length=6", "reward.names=[math]", "algo.entropy_coef=0.01"]))
    sys.stdout.flush()
    os._exit(0)
""")


def _deepspeed(config: str):
    """A DeepSpeed case: runs where `pip install deepspeed` was done (it installs and runs on CPU
    with gloo; the default test environment does not carry it)."""
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        return pytest.param(config, marks=pytest.mark.skip(reason="deepspeed is not installed (pip install deepspeed)"))
    return config


@pytest.mark.parametrize("config", ["fsdp2.yaml", _deepspeed("deepspeed_zero2.yaml"), _deepspeed("deepspeed_zero3.yaml")])
def test_sharded_run_equals_one_process_and_resumes_exactly(tmp_path, data_file, one_process, config):
    worker = tmp_path / "worker.py"
    worker.write_text(SHARDED_WORKER)
    # fp32 like the one-process run (the DeepSpeed files ask for bf16, the GPU setting)
    log = _launch(tmp_path, config, ["--mixed_precision", "no", str(worker), str(SFT), str(tmp_path),
                                     str(data_file), str(SFT.with_name("grpo.yaml")), str(_images(tmp_path))],
                  timeout=400)
    kind = "fsdp2" if config == "fsdp2.yaml" else f"deepspeed zero-{config[-6]}"
    assert f"world size 2 ({kind}, backend gloo)" in log
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert _max_diff(_weights(one_process), _weights(full)) < TOL
    # The interrupted run stopped after step 2, saved the sharded optimizer state, and resumed at 3.
    assert [json.loads(x)["step"] for x in (cut / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert any("optim" in p.name for p in (cut / "checkpoint-000002" / "accelerate").rglob("*"))
    resumed, uninterrupted = _weights(cut), _weights(full)
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    for vlm in ("tiny-llava", "tiny-qwen2.5-vl"):  # sampled, scored and trained on both ranks
        (rec,) = [json.loads(x) for x in (tmp_path / vlm / "metrics.jsonl").read_text().splitlines()]
        assert rec["data/rows_by_rank"] in ([[0], [1]], [[1], [0]]) and "reward/mean" in rec
        trained = _weights_at_start(str(tmp_path / vlm / "checkpoint-000001" / "model"))
        assert _max_diff(trained, _weights_at_start(vlm)) > 0


def _images(tmp_path: Path) -> Path:
    """Two image rows (GRPO on a tiny VLM, one prompt per rank)."""
    from PIL import Image

    rows = []
    for i in range(2):
        Image.new("RGB", (28, 28), color=(60 * i, 100, 200)).save(tmp_path / f"img{i}.png")
        rows.append({"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]}],
                     "image": str(tmp_path / f"img{i}.png"), "answer": str(i + 1)})
    path = tmp_path / "images.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.gpu
@pytest.mark.parametrize("config", ["ddp_gpu.yaml", "fsdp2.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml"])
def test_gpu_configs_equal_one_process_and_resume_exactly(tmp_path, data_file, one_process, config):
    """The shipped GPU configs on 2 GPUs (NCCL): same checks as on CPU, fp32 weights and no mixed
    precision so the one-process run is the reference. Run with `pytest -m gpu` on a machine with
    2+ GPUs (DeepSpeed: `pip install deepspeed` first)."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA GPUs")
    if config.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    worker = tmp_path / "worker.py"
    worker.write_text(SHARDED_WORKER)
    log = _launch(tmp_path, config, ["--mixed_precision", "no", str(worker), str(SFT), str(tmp_path),
                                     str(data_file)], timeout=600, gpu=True)
    assert "world size 2 (" in log and "backend nccl" in log
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert _max_diff(_weights(one_process), _weights(full)) < TOL
    resumed, uninterrupted = _weights(cut), _weights(full)
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)


def test_accelerate_launch_without_a_config_fails_instead_of_training_on_one_process(tmp_path, data_file):
    """On a machine without GPUs, `accelerate launch --num_processes 2` (no config file) starts its
    single-process launcher; the run stops at once and names the config that starts the ranks."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "-m", "duotune.cli",
           "train", str(SFT), *_overrides(tmp_path, data_file, "one", 2)]
    proc = subprocess.run(cmd, env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0
    assert "started only this one" in proc.stderr and "configs/accelerate/multi_cpu.yaml" in proc.stderr
    assert not (tmp_path / "one" / "metrics.jsonl").exists()


def test_launch_problem_only_flags_the_single_process_launcher():
    from duotune.trainers.distributed import launch_problem

    simple = {"ACCELERATE_USE_CPU": "False", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    assert "multi_cpu.yaml" in launch_problem(simple, has_gpu=False)
    assert launch_problem({**simple, "WORLD_SIZE": "2"}, has_gpu=False) is None  # ranks were started
    assert launch_problem({"ACCELERATE_USE_CPU": "False"}, has_gpu=False) is None  # one process asked for
    assert launch_problem({"MASTER_ADDR": "10.0.0.1"}, has_gpu=False) is None  # not launched by accelerate


class _Ranks:
    """Stands in for a sharded `Parallel`: the other rank needs `count` micro-batches."""

    sharded = True

    def __init__(self, count: int):
        self.count, self.inside, self.backwards = count, False, []

    def same_count(self, n: int) -> int:
        return max(n, self.count)

    def all_true(self, flag: bool) -> bool:
        return flag

    @contextmanager
    def accumulating(self):
        self.inside = True
        try:
            yield
        finally:
            self.inside = False

    def backward(self, loss):
        self.backwards.append(self.inside)
        loss.backward()


def test_sharded_ranks_run_equal_forwards_and_only_the_last_backward_communicates(tmp_path, data_file):
    """A rank whose peer needs 12 micro-batches splits its 8 rows into 8 and adds 4 padding forwards
    (FSDP2/ZeRO-3 gather parameters in every forward, so the counts must match); the padding adds no
    gradient, and every backward but the last runs inside `accumulating` (no communication)."""
    from duotune.data import load_examples
    from duotune.models import load_model
    from duotune.rollout import HFSampler, PromptEncoder, SamplingParams, build_groups, collate
    from duotune.trainers.compute import backward_full_batch
    from duotune.trainers.methods import METHODS, LossInputs

    cfg = load_config(TrainConfig, ROOT / "configs" / "tiny" / "srft.yaml", [f"data.train={data_file}"])
    bundle = load_model("tiny-llm")
    enc = PromptEncoder(bundle)  # two prompts x (3 samples + 1 demo), as an SRFT step builds them
    exs = load_examples([{"prompt": f"q{i}", "answer": "1", "demo": "1 2 3 4"} for i in range(2)])
    batch = collate(build_groups(HFSampler(bundle), enc, exs, SamplingParams(seed=0), group_size=4,
                                 demo_in_group=True, demo_rows=False, max_completion_length=6), enc)
    assert batch.num_rows == 8
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    inp = LossInputs(settings=cfg.algo, batch=batch, mask=batch.response_mask, rewards=rewards,
                     correct=rewards > 0.5, advantages=rewards - 0.5, old_logp=None, ref_logp=None, beta=0.0,
                     progress=0.0, l_max=cfg.rollout.max_completion_length)
    forwards = []
    bundle.model.register_forward_hook(lambda *_: forwards.append(1))
    grads, losses = [], []
    for ranks in (None, _Ranks(12)):
        bundle.model.zero_grad()
        forwards.clear()
        loss, *_ = backward_full_batch(bundle.model, enc, batch, lambda lp, h: METHODS.get("srft").loss(inp, lp, h)[:2],
                                       10**9, with_entropy=True, share_prompts=False, parallel=ranks)
        grads.append(torch.cat([p.grad.reshape(-1) for p in bundle.model.parameters()]))
        losses.append(float(loss))
    assert len(forwards) == 12 + 12  # pass one (no grad) and the replay, 8 rows + 4 paddings each
    assert ranks.backwards == [True] * 11 + [False]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5, abs=1e-6)
    assert torch.allclose(grads[1], grads[0], rtol=1e-4, atol=1e-6)

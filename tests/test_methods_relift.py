"""ReLIFT: failed questions enter the buffer newest first, an SFT update over B of them runs after the
RL update once B are held (its loss and clipped gradient by hand, its own AdamW and lr), only failing
questions fill it on tiny-llm, and the buffer and SFT optimizer survive a resume exactly."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from duotune.config import load_config
from duotune.data import Example
from duotune.errors import DuotuneError
from duotune.models import compute_logprobs, load_model
from duotune.registry import Registry
from duotune.rollout import PromptEncoder, build_groups, collate
from duotune.trainers import METHODS, TrainConfig, train
from duotune.trainers.config import OptimCfg
from duotune.trainers.methods.relift import FailedQuestionBuffer, failed_questions

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny"


def _single(model):
    """A one-process stage's accelerator and prepared policy (what `loop._run_stage` builds)."""
    from accelerate import Accelerator

    from duotune.trainers.distributed import Parallel

    acc = Accelerator(cpu=True)
    return {"accelerator": acc, "parallel": Parallel(acc, model, "single")}


@pytest.fixture(scope="module", autouse=True)

def rewards():
    reg = Registry.all()["reward"]
    reg.register("test_never", lambda completions, **_: [0.0] * len(completions))
    reg.register("test_always", lambda completions, **_: [1.0] * len(completions))
    yield
    reg.unregister("test_never")
    reg.unregister("test_always")


def _examples(n):
    return [Example(id=f"q{i}", prompt=[{"role": "user", "content": f"q{i}"}], answer=str(i), demo=f"{i} {i}")
            for i in range(n)]


def _batch(correct):
    """Two questions x 2 rollouts (prompt indices 0, 1); `correct` per rollout row."""
    return SimpleNamespace(group_ids=torch.tensor([0, 0, 1, 1]), is_demo=torch.zeros(4, dtype=torch.bool),
                           prompt_index=torch.tensor([0, 0, 1, 1]), correct=torch.tensor(correct))


def _buffer(examples, b, model=None):
    s = METHODS.get("relift").settings.model_validate({"buffer_size": b})
    model = model or torch.nn.Linear(1, 1)
    stage = SimpleNamespace(examples=examples, bundle=SimpleNamespace(model=model), cfg=SimpleNamespace(optim=OptimCfg()),
                            **_single(model))
    return FailedQuestionBuffer(s, stage), stage


def test_failed_questions_are_those_with_no_solved_rollout():
    assert failed_questions(_batch([False, False, True, False])) == [0]
    assert failed_questions(_batch([False, False, False, False])) == [0, 1]
    assert failed_questions(_batch([True, False, False, True])) == []


def test_buffer_is_newest_first_and_the_update_takes_b_of_it():
    """B = 3; steps add (0, 1), then (2, 3): the newest step's questions go in front, as the release
    concatenates [new, old]: buffer [2, 3, 0, 1] -> SFT on [2, 3, 0], [1] stays."""
    ex = _examples(4)
    buf, stage = _buffer(ex, 3)
    taken = []
    buf._sft_update = lambda st, take: taken.append(list(take)) or {}
    m = buf(stage, 0, SimpleNamespace(examples=ex[:2]), _batch([False] * 4))
    assert (m["relift/added"], m["relift/buffer_size"], taken) == (2, 2, [])
    m = buf(stage, 1, SimpleNamespace(examples=ex[2:]), _batch([False] * 4))
    assert taken == [[2, 3, 0]] and buf.items == [1] and m["relift/buffer_size"] == 1
    state = json.loads(json.dumps({k: v for k, v in buf.state_dict().items() if k != "optimizer"}))
    assert state["buffer"] == [[1, "q1"]]  # plain JSON data: row index and id
    with pytest.raises(DuotuneError, match="ReLIFT buffer holds training row 1 \\('q1'\\).*same data.train"):
        _buffer(_examples(4)[::-1], 3)[0].load_state_dict(buf.state_dict())


def test_sft_update_is_token_mean_nll_with_its_own_clipped_adamw():
    """The update's loss is the token mean of -log p over the B demos (no entropy term here); the gradient
    the SFT optimizer steps on is that NLL's gradient scaled to norm 0.5 (grad clip); its lr is sft_lr and
    the RL optimizer is not touched."""
    bundle = load_model("tiny-llm")
    ex = _examples(2)
    s = METHODS.get("relift").settings.model_validate({"buffer_size": 2, "sft_lr": 0.01, "sft_entropy_coef": 0})
    enc = PromptEncoder(bundle)
    cfg = SimpleNamespace(optim=OptimCfg(), rollout=SimpleNamespace(max_completion_length=8),
                          compute=SimpleNamespace(token_budget=4096, share_prompts=True))
    stage = SimpleNamespace(examples=ex, bundle=bundle, encoder=enc, cfg=cfg, **_single(bundle.model))
    buf = FailedQuestionBuffer(s, stage)
    rows = collate(build_groups(None, enc, ex, None, group_size=0, demo_in_group=False, demo_rows=True,
                                max_completion_length=8), enc)
    params = [p for p in bundle.model.parameters() if p.requires_grad]
    lp, _ = compute_logprobs(bundle.model, rows.input_ids, rows.attention_mask, rows.loss_mask)
    mask = rows.response_mask
    nll = -(lp.gather(1, rows.resp_pos) * mask).sum() / mask.sum()
    grads = torch.autograd.grad(nll, params)
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    seen = {}
    real_step = buf.optimizer.step

    def step():
        seen["grads"] = [p.grad.clone() for p in params]
        seen["lr"] = buf.optimizer.param_groups[0]["lr"]
        real_step()

    buf.optimizer.step = step
    m = buf(stage, 0, SimpleNamespace(examples=ex), _batch([False] * 4))
    assert m["relift/sft_loss"] == pytest.approx(float(nll.detach()), rel=1e-5)
    assert m["relift/sft_grad_norm"] == pytest.approx(float(norm), rel=1e-4) and float(norm) > 0.5
    scale = 0.5 / float(norm)
    assert all(torch.allclose(a, scale * g, rtol=1e-3, atol=1e-7) for a, g in zip(seen["grads"], grads))
    assert seen["lr"] == 0.01 and m["relift/sft_updates"] == 1 and buf.items == []


def _cfg(tmp_path, data_file, reward, *extra):
    return load_config(TrainConfig, TINY / "relift.yaml", [
        f"data.train={data_file}", f"run.output_dir={tmp_path}", "run.progress=false", "run.plots=false",
        f"reward.names=[{reward}]", *extra])


def _records(res):
    return [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]


def test_only_failed_questions_fill_the_buffer_and_drain_by_sft(tmp_path, data_file):
    """B = 3, 2 questions a step: when every rollout fails the buffer reads 2, 1 (SFT), 0 (SFT), 2; when
    every rollout is solved nothing enters and no SFT update runs."""
    recs = _records(train(_cfg(tmp_path, data_file, "test_never", "steps=4", "algo.buffer_size=3",
                               "run.name=fail")))
    assert [r["relift/buffer_size"] for r in recs] == [2, 1, 0, 2]
    assert [r["relift/sft_updates"] for r in recs] == [0, 1, 2, 2]
    assert "relift/sft_loss" in recs[1] and "relift/sft_loss" not in recs[0]
    recs = _records(train(_cfg(tmp_path, data_file, "test_always", "steps=2", "run.name=solve")))
    assert [(r["relift/added"], r["relift/buffer_size"], r["relift/sft_updates"]) for r in recs] == [(0, 0, 0)] * 2


def test_resume_restores_the_buffer_and_the_sft_optimizer(tmp_path, data_file):
    """B = 3 over 5 steps: SFT at steps 2, 3 and 5. Cut after step 2 (one question left in the buffer,
    one SFT step in the AdamW moments): the resumed run repeats the uninterrupted one exactly (without the
    buffer no SFT at step 3; without the moments step 5's SFT loss differs)."""
    over = ["steps=5", "algo.buffer_size=3", "algo.sft_lr=1.0e-2", "run.save_every=1", "run.keep_last=5",
            "run.keep_optimizer_state=true"]
    full = _records(train(_cfg(tmp_path, data_file, "test_never", "run.name=full", *over)))
    train(_cfg(tmp_path, data_file, "test_never", "run.name=cut", "run.stop_after=2", *over))
    cut = train(_cfg(tmp_path, data_file, "test_never", "run.name=cut", "run.resume=auto", *over))
    from duotune.trainers.checkpoint import load_trainer_state

    state = load_trainer_state(cut.run_dir / "checkpoint-000002")
    assert len(state["method_state"]["buffer"]) == 1 and state["method_state"]["updates"] == 1
    resumed = _records(cut)
    assert [r["relift/sft_updates"] for r in full] == [0, 1, 2, 2, 3]
    assert len(resumed) == 5
    for a, b in zip(full, resumed):
        picked = [{k: v for k, v in r.items() if k == "loss/total" or k.startswith("relift/")} for r in (a, b)]
        assert set(picked[0]) == set(picked[1]) and picked[0] == pytest.approx(picked[1], abs=1e-6)

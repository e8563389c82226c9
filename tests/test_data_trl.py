"""TRL's dataset formats and reward conventions (issue 18): `messages` rows (the last assistant turn is
the demonstration), prompt-completion rows (standard and conversational), prompt-only RL rows; rewards
get `prompts`, `completions`, `completion_ids` and every dataset column; a reward module in the current
folder imports; and a reward function copied from TRL's documentation trains unchanged."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from duotune.config import load_config
from duotune.data import load_examples
from duotune.errors import DataError
from duotune.registry import Registry
from duotune.rewards import validate_reward_name
from duotune.trainers import TrainConfig, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tiny"

# Copied unchanged from TRL's GRPO trainer documentation, "Using a custom reward function", Example 3
# ("Reward completions based on a reference", standard format with a `ground_truth` column):
# https://huggingface.co/docs/trl/grpo_trainer#example-3-reward-completions-based-on-a-reference
TRL_DOCS_REWARD = r'''import re

def reward_func(completions, ground_truth, **kwargs):
    # Regular expression to capture content inside \boxed{}
    matches = [re.search(r"\\boxed\{(.*?)\}", completion) for completion in completions]
    contents = [match.group(1) if match else "" for match in matches]
    # Reward 1 if the content is the same as the ground truth, 0 otherwise
    return [1.0 if c == gt else 0.0 for c, gt in zip(contents, ground_truth)]
'''


def test_messages_rows_put_the_last_assistant_turn_in_the_demo():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+3?"},
            {"role": "assistant", "content": "2+3 = \\boxed{5}"}]
    (ex,) = load_examples([{"messages": chat, "source": "toy"}])
    assert ex.prompt == chat[:2] and ex.demo == "2+3 = \\boxed{5}" and ex.answer == "5"
    assert ex.meta == {"source": "toy"}
    (given,) = load_examples([{"messages": chat, "answer": "five"}])
    assert given.answer == "five"
    # earlier assistant turns stay in the prompt (multi-turn history)
    (multi,) = load_examples([{"messages": [chat[1], chat[2], {"role": "user", "content": "and 4+4?"},
                                            {"role": "assistant", "content": "\\boxed{8}"}]}])
    assert [m["role"] for m in multi.prompt] == ["user", "assistant", "user"] and multi.answer == "8"


@pytest.mark.parametrize("messages, message", [
    ([{"role": "user", "content": "q"}], "last message must be the assistant's answer"),
    ([{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}], "no user message"),
])
def test_bad_messages_rows_name_the_field(messages, message):
    with pytest.raises(DataError, match=message) as info:
        load_examples([{"messages": messages}])
    assert info.value.field == "messages" and info.value.row == 1


def test_prompt_completion_rows_standard_and_conversational():
    std, conv = load_examples([
        {"prompt": "What is 2+3?", "completion": "It is \\boxed{5}."},
        {"prompt": [{"role": "user", "content": "What is 4*4?"}],
         "completion": [{"role": "assistant", "content": "\\boxed{16}"}]}])
    assert std.prompt == [{"role": "user", "content": "What is 2+3?"}]
    assert (std.demo, std.answer) == ("It is \\boxed{5}.", "5")
    assert (conv.prompt[0]["content"], conv.demo, conv.answer) == ("What is 4*4?", "\\boxed{16}", "16")
    with pytest.raises(DataError, match="needs an assistant message"):
        load_examples([{"prompt": "q", "completion": [{"role": "user", "content": "x"}]}])


def test_prompt_only_rows_are_rl_prompts_with_their_columns():
    (ex,) = load_examples([{"prompt": [{"role": "user", "content": "Solve 2x = 4"}], "ground_truth": "2"}])
    assert ex.answer is None and ex.demo is None
    assert ex.columns()["ground_truth"] == "2"


def test_reward_module_in_the_current_folder_imports(tmp_path, monkeypatch):
    (tmp_path / "cwd_rewards_18.py").write_text(TRL_DOCS_REWARD)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    assert validate_reward_name("cwd_rewards_18:reward_func") == "cwd_rewards_18:reward_func"


SEEN: list[dict] = []


def _spy(prompts, completions, completion_ids, ground_truth, **kwargs):
    SEEN.append({"prompts": prompts, "completions": completions, "completion_ids": completion_ids,
                 "ground_truth": ground_truth, "kwargs": sorted(kwargs)})
    return [0.0] * len(completions)


@pytest.fixture
def spy_reward():
    reg = Registry.all()["reward"]
    reg.register("test_trl_spy", _spy)
    SEEN.clear()
    yield
    reg.unregister("test_trl_spy")


def _rows(tmp_path: Path) -> Path:
    """TRL standard prompt-completion rows with a `ground_truth` column (2+i = 2+i)."""
    path = tmp_path / "trl.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"What is 2+{i}?", "completion": f"\\boxed{{{2 + i}}}",
                                        "ground_truth": str(2 + i), "level": i % 2}) + "\n" for i in range(4)))
    return path


def test_rewards_get_prompts_completions_completion_ids_and_every_column(tmp_path, spy_reward):
    train(load_config(TrainConfig, CONFIGS / "luffy.yaml", [
        f"data.train={_rows(tmp_path)}", f"run.output_dir={tmp_path}", "run.progress=false", "run.plots=false",
        "reward.names=[test_trl_spy]", "steps=1", "prompts_per_step=2", "rollout.group_size=4"]))
    (call,) = SEEN
    rows = [json.loads(x) for x in next((tmp_path).glob("luffy-*/rollouts/step-000001.jsonl")).read_text().splitlines()]
    assert call["completions"] == [r["completion"] for r in rows]
    assert call["prompts"] == [r["prompt"] for r in rows]
    assert call["prompts"][0][-1] == {"role": "user", "content": call["prompts"][0][-1]["content"]}
    assert [len(ids) for ids in call["completion_ids"]] == [r["tokens"] for r in rows]
    assert all(isinstance(t, int) for ids in call["completion_ids"] for t in ids)
    assert call["ground_truth"] == [str(2 + int(re.search(r"2\+(\d)", p[-1]["content"]).group(1)))
                                    for p in call["prompts"]]
    assert {"level", "answer", "id", "reward_type"} <= set(call["kwargs"])


def test_trl_docs_reward_function_trains_unchanged_from_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "trl_docs_rewards_18.py").write_text(TRL_DOCS_REWARD)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    res = train(load_config(TrainConfig, CONFIGS / "luffy.yaml", [
        f"data.train={_rows(tmp_path)}", f"run.output_dir={tmp_path}", "run.progress=false", "run.plots=false",
        "reward.names=['trl_docs_rewards_18:reward_func']", "steps=2", "prompts_per_step=2",
        "rollout.group_size=4"]))
    for step in (1, 2):
        rows = [json.loads(x) for x in (res.run_dir / "rollouts" / f"step-{step:06d}.jsonl").read_text().splitlines()]
        for r in rows:  # the TRL function's verdict, recomputed here from the completion and the column
            found = re.search(r"\\boxed\{(.*?)\}", r["completion"])
            gt = re.search(r"2\+(\d)", r["prompt"][-1]["content"]).group(1)
            want = 1.0 if found and found.group(1) == str(2 + int(gt)) else 0.0
            assert r["rewards"]["trl_docs_rewards_18:reward_func"] == want
        assert all(r["reward"] == 1.0 for r in rows if r["is_demo"])  # the demo is the right answer

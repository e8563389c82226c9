"""Pipeline rules without a server: the exact aha split, the 15-word rewrite rule, verdict and answer
parsing, config errors, resumable stores, and an in-process six-stage run with exact funnel counts."""

import json
from pathlib import Path

import pytest
from PIL import Image

from duotune.config import load_config
from duotune.errors import ConfigError, DataError
from duotune.pipeline import AHA_KEYWORDS, PipelineConfig, StageError, aha_keywords, run_pipeline, word_change
from duotune.pipeline.stages import final_answer, parse_verdict
from duotune.pipeline.store import Job, StageStore, run_jobs


def test_aha_keyword_list_is_spec4_exactly():
    assert AHA_KEYWORDS == ("wait", "again", "double-check", "hmm", "mistake", "alternatively", "check",
                            "i should confirm")


@pytest.mark.parametrize("trace, hits", [
    ("<think>2 + 2 = 4.</think><answer>4</answer>", []),
    ("WAIT, that is 5.", ["wait"]),
    ("Waiting is not needed", ["wait"]),                     # substring, not word match
    ("the case against it", ["again"]),                      # 'against' contains 'again'
    ("Let me double-check.", ["double-check", "check"]),
    ("double check", ["check"]),
    ("Hmm. A Mistaken count", ["hmm", "mistake"]),
    ("Alternatively, count rows.", ["alternatively"]),
    ("I Should Confirm the total", ["i should confirm"]),
    ("I should  confirm (two spaces)", []),
    ("hm, I made an error; ok", []),
])
def test_aha_keywords_case_insensitive_substrings(trace, hits):
    assert aha_keywords(trace) == hits


@pytest.mark.parametrize("before, after, change", [
    ("a b c", "a b c", 0),
    ("one two", "one two " + " ".join(["x"] * 15), 15),
    ("one two", "one two " + " ".join(["x"] * 16), 16),
    (" ".join(["w"] * 20), "w w w w", 16),
    ("a\nb\tc", "a b c", 0),
])
def test_word_change_counts_whitespace_words(before, after, change):
    assert word_change(before, after) == change


@pytest.mark.parametrize("text, verdict", [
    ("Yes", True), ("yes.", True), (" No, it differs", False), ("**Yes**", True),
    ("<think>no idea... yes?</think> No", False), ("Maybe", None), ("", None), ("Yesterday", None),
])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) is verdict


@pytest.mark.parametrize("trace, answer", [
    ("<think>x</think><answer> 7 </answer>", "7"),
    ("<think>x</think> The answer is 7.", "The answer is 7."),
    ("<answer>1</answer> then <answer>2</answer>", "2"),
    ("just 3", "just 3"),
])
def test_final_answer(trace, answer):
    assert final_answer(trace) == answer


def test_config_errors_name_the_key_and_fix(tmp_path):
    base = {"input": "x.jsonl", "out_dir": str(tmp_path), "caption": {"source": "scene_text"},
            "clients": {"m": {"kind": "http", "model": "m"}}}
    with pytest.raises(ConfigError, match="distil.client 'reasoner' is not defined under `clients`"):
        load_config(PipelineConfig, base=base)
    ok = ["distil.client=m", "rewrite.client=m", "verify.client=m"]
    assert load_config(PipelineConfig, None, ok, base=base).verify.max_tokens == 8
    with pytest.raises(ConfigError, match=r"unknown placeholder\(s\) \['gold_answer'\]"):
        load_config(PipelineConfig, None, ok + ["verify.prompt='{gold_answer}'"], base=base)
    with pytest.raises(ConfigError, match="caption.client 'captioner' is not defined"):
        load_config(PipelineConfig, None, ok + ["caption.source=model"], base=base)


def test_store_drops_partial_last_line_and_resumes(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"key": "a", "response": "1"}\n{"key": "b", "resp')
    store = StageStore(path)
    assert list(store.rows) == ["a"] and path.read_text() == '{"key": "a", "response": "1"}\n'
    calls = []

    def chat(messages):
        calls.append(messages[0])
        return messages[0].upper()
    jobs = [Job(k, f"item-{k}", lambda k=k: [k]) for k in ("a", "b", "c", "b")]
    assert run_jobs("t", store, jobs, chat, concurrency=2, record={"model": "m"}) == 2
    assert sorted(calls) == ["b", "c"]
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted((r["key"], r["response"]) for r in rows) == [("a", "1"), ("b", "B"), ("c", "C")]


def test_run_jobs_saves_finished_items_then_names_the_failing_one(tmp_path):
    store = StageStore(tmp_path / "s.jsonl")

    def chat(messages):
        if messages[0] == "bad":
            raise DataError("cannot read", file="in.jsonl", row=2)
        return "ok"
    jobs = [Job("k1", "good-1", lambda: ["x"]), Job("k2", "row-2", lambda: ["bad"])]
    with pytest.raises(StageError, match=r"stage 'distil', item 'row-2' \(key k2\): file in.jsonl, row 2"):
        run_jobs("distil", store, jobs, chat, concurrency=1, record={})
    assert list(StageStore(store.path).rows) == ["k1"]


class Scripted:
    """Deterministic in-process client: answers by stage, records every call."""

    def __init__(self, name):
        self.name, self.concurrency, self.calls = name, 1, 0

    def chat(self, messages, **params):
        self.calls += 1
        text = messages[-1]["content"]
        if text.startswith("Rewrite"):
            trace = text.split("Text:\n", 1)[1]
            extra = 16 if "[long]" in trace else 0
            return trace.replace("description", "image") + " z" * extra
        if "strict grader" in text:
            return "Yes" if "Model answer: 4\n" in text else "No"
        q = text.split("Question: ", 1)[1]
        answer = "5" if "[wrong]" in q else "4"
        hmm = " Hmm, recount." if "[aha]" in q else ""
        return f"<think>The description shows {q}.{hmm}</think><answer>{answer}</answer>"


def test_in_process_run_exact_funnel_and_pools(tmp_path):
    Image.new("RGB", (4, 4), "red").save(tmp_path / "r.png")
    qs = ["plain", "plain", "[long] q", "[wrong] q", "[aha] q"]
    with open(tmp_path / "in.jsonl", "w") as f:
        for i, q in enumerate(qs):
            f.write(json.dumps({"id": f"r{i}", "image": "r.png", "question": q, "answer": "4",
                                "scene_text": "four dots", "reward_type": "digit"}) + "\n")
    base = {"input": str(tmp_path / "in.jsonl"), "out_dir": str(tmp_path / "out"),
            "caption": {"source": "scene_text"}, "distil": {"client": "s"}, "rewrite": {"client": "s"},
            "verify": {"client": "s"}, "clients": {"s": {"model": "scripted"}}}
    cfg = load_config(PipelineConfig, base=base)
    client = Scripted("scripted")
    funnel = run_pipeline(cfg, clients={"s": client})
    assert {k: funnel[k] for k in ("input_rows", "collect", "caption", "distil", "rewrite", "verify",
                                   "sft", "rl")} == dict(input_rows=5, collect=4, caption=4, distil=4,
                                                         rewrite=3, verify=2, sft=1, rl=1)
    assert funnel["dropped"] == {"collect": {"duplicate": 1}, "caption": {}, "distil": {},
                                 "rewrite": {"length_change": 1}, "verify": {"judged_no": 1}}
    assert client.calls == 4 + 4 + 3
    sft = [json.loads(x) for x in (tmp_path / "out" / "sft.jsonl").read_text().splitlines()]
    assert sft == [{"id": "r0", "question": "plain", "image": "../r.png", "answer": "4",
                    "demo": "<think>The image shows plain.</think><answer>4</answer>",
                    "reward_type": "digit",
                    "aha_keywords": [], "key": sft[0]["key"]}]
    rl = [json.loads(x) for x in (tmp_path / "out" / "rl.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rl] == ["r4"] and rl[0]["aha_keywords"] == ["hmm"]
    assert json.loads((tmp_path / "out" / "funnel.json").read_text()) == funnel
    again = run_pipeline(cfg, clients={"s": client})   # resume: nothing left to ask
    assert client.calls == 11 and again["new_items"] == {k: 0 for k in funnel["new_items"]}
    assert {k: again[k] for k in ("sft", "rl")} == {"sft": 1, "rl": 1}


def test_missing_image_and_scene_text_name_file_and_row(tmp_path):
    Image.new("RGB", (4, 4), "red").save(tmp_path / "r.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    rows = [{"image": "r.png", "question": "q", "answer": "1"},
            {"image": "bad.png", "question": "q", "answer": "1"}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = {"input": str(tmp_path / "in.jsonl"), "out_dir": str(tmp_path / "out"),
            "caption": {"source": "scene_text"}, "distil": {"client": "s"}, "rewrite": {"client": "s"},
            "verify": {"client": "s"}, "clients": {"s": {"model": "scripted"}}}
    cfg = load_config(PipelineConfig, base=base)
    with pytest.raises(DataError, match=r"in.jsonl, row 2, field 'image': image file .*bad.png.* not a "):
        run_pipeline(cfg, clients={"s": Scripted("s")})
    cfg.on_bad_image = "skip"
    with pytest.raises(DataError, match=r"row 1, field 'scene_text': caption.source=scene_text needs"):
        run_pipeline(cfg, clients={"s": Scripted("s")})


RECIPES = sorted((Path(__file__).parents[1] / "configs" / "pipeline").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_load(recipe):
    cfg = load_config(PipelineConfig, recipe)
    assert cfg.rewrite.max_word_change == 15 and set(cfg.clients) >= {cfg.distil.client, cfg.verify.client}


def test_http_client_needs_a_url_and_sends_the_key(monkeypatch):
    from duotune.pipeline import ClientConfig, build_client
    monkeypatch.delenv("MY_URL", raising=False)
    with pytest.raises(ConfigError, match=r"no server URL; set base_url in the config or .* \$MY_URL"):
        build_client(ClientConfig(model="m", base_url_env="MY_URL"))
    monkeypatch.setenv("MY_URL", "http://h:1/v1/")
    monkeypatch.setenv("MY_KEY", "sk-1")
    client = build_client(ClientConfig(model="m", base_url_env="MY_URL", api_key_env="MY_KEY", concurrency=7))
    assert (client.url, client._key, client.concurrency, client.name) == (
        "http://h:1/v1/chat/completions", "sk-1", 7, "m")


def test_local_text_model_rejects_images_with_the_fix(tmp_path):
    from duotune.pipeline import ClientConfig, LocalChatClient, build_client
    from duotune.pipeline.clients import image_part
    client = build_client(ClientConfig(kind="local", model="tiny-llm"))
    assert isinstance(client, LocalChatClient) and (client.name, client.concurrency) == ("tiny-llm", 1)
    Image.new("RGB", (4, 4), "red").save(tmp_path / "r.png")
    with pytest.raises(ConfigError, match="'tiny-llm' is text-only .* caption.source=scene_text"):
        client.chat([{"role": "user", "content": [image_part(str(tmp_path / "r.png"))]}])

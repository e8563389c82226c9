"""All six stages through the HTTP client against a real OpenAI-compatible server on 127.0.0.1
(started in each test, stopped at its end): exact funnel and pools, a server that fails and recovers
(nothing lost or duplicated, the resumed run completes), 4xx errors, and real tiny transformers models
(`tiny-llm`, `tiny-qwen2-vl` from duotune.models) behind the server."""

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from duotune.config import load_config
from duotune.models import load_model
from duotune.pipeline import LocalChatClient, PipelineConfig, StageError, run_pipeline, word_change
from duotune.pipeline.clients import image_part
from duotune.pipeline.stages import parse_verdict

pytestmark = pytest.mark.timeout(60)

COLOURS = {(255, 0, 0): "red", (0, 0, 255): "blue", (0, 128, 0): "green", (255, 255, 0): "yellow",
           (255, 255, 255): "white", (0, 0, 0): "black"}


class ChatServer:
    """POST /v1/chat/completions -> `responder(body)`; `fault(stage, n)` may answer an int status,
    "drop" (close without a reply) or ("sleep", s) instead. Every request is logged."""

    def __init__(self, responder, fault=None):
        self.responder, self.fault = responder, fault or (lambda stage, n: None)
        self.log, self.lock = [], threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "no such route"})
                stage = stage_of(body["messages"])
                with outer.lock:
                    n = len(outer.log)
                    fault = outer.fault(stage, sum(s == stage and c == 200 for s, c in outer.log))
                    outer.log.append((stage, fault if isinstance(fault, int) else 200))
                if fault == "drop":
                    self.close_connection = True
                    return
                if isinstance(fault, tuple):
                    time.sleep(fault[1])
                if isinstance(fault, int):
                    return self._send(fault, {"error": f"injected {fault} on request {n}"},
                                      {"Retry-After": "0"} if fault == 429 else {})
                text = outer.responder(body)
                self._send(200, {"object": "chat.completion", "model": body["model"], "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}]})

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client timed out and went away
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def served(self, stage):
        return sum(s == stage and c == 200 for s, c in self.log)


def stage_of(messages):
    first = messages[0]["content"]
    if isinstance(first, list):
        return "caption"
    if messages[0]["role"] == "system":
        return "distil"
    return "rewrite" if first.startswith("Rewrite") else "verify"


def scripted(body):
    """Caption from the decoded image's pixel colour, so a corrupted image transport shows up; the
    question's [tags] steer the other stages to each drop reason."""
    messages, stage = body["messages"], stage_of(body["messages"])
    if stage == "caption":
        url = messages[0]["content"][0]["image_url"]["url"]
        png = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        return f"The background is {COLOURS[png.convert('RGB').getpixel((0, 0))]}."
    text = messages[-1]["content"]
    if stage == "distil":
        colour = text.split("The background is ", 1)[1].split(".", 1)[0]
        q = text.split("Question: ", 1)[1]
        if "[nothink]" in q:
            return f"It is {colour}."
        colour = "purple" if "[wrong]" in q else colour
        extra = " Wait, look again." if "[aha]" in q else (" HMM, sure." if "[hm]" in q else "")
        return f"<think>Q: {q} The description says {colour}.{extra}</think><answer>{colour}</answer>"
    if stage == "rewrite":
        trace = text.split("Text:\n", 1)[1]
        pad = " z" * (16 if "[long16]" in trace else 15 if "[long15]" in trace else 0)
        return trace.replace("description", "image") + pad
    gold = text.split("Reference answer: ", 1)[1].split("\n", 1)[0]
    return "Yes." if f"Model answer: {gold}\n" in text else "No."


ROWS = [  # (id, image colour, question)
    ("a", "red", "What colour is the background?"),
    ("b", "red", "What colour is the background?"),       # duplicate of a
    ("c", "blue", "[nothink] Colour?"),
    ("d", "green", "[long16] Colour?"),
    ("e", "yellow", "[long15] Colour?"),
    ("f", "white", "[wrong] Colour?"),
    ("g", "red", "[aha] Which colour fills it?"),         # same image as a: one caption
    ("h", "black", "[hm] Colour?"),
]
EXPECTED = dict(input_rows=8, collect=7, caption=7, distil=6, rewrite=5, verify=4, sft=2, rl=2)
DROPPED = {"collect": {"duplicate": 1}, "caption": {}, "distil": {"no_think": 1},
           "rewrite": {"length_change": 1}, "verify": {"judged_no": 1}}


def write_input(tmp_path):
    rgb = {v: k for k, v in COLOURS.items()}
    (tmp_path / "img").mkdir(exist_ok=True)
    with open(tmp_path / "in.jsonl", "w") as f:
        for rid, colour, q in ROWS:
            mode = "RGBA" if colour == "black" else "RGB"   # RGBA must arrive as plain RGB
            Image.new(mode, (6, 5), rgb[colour]).save(tmp_path / "img" / f"{colour}.png")
            f.write(json.dumps({"id": rid, "image": f"img/{colour}.png", "question": q, "answer": colour,
                                "reward_type": "open"}) + "\n")
    return str(tmp_path / "in.jsonl")


def config(inp, out, url, **client):
    clients = {"srv": {"kind": "http", "model": "scripted-1", "base_url": url, "concurrency": 3,
                       "max_retries": 4, "backoff_s": 0.001, "timeout_s": 2.0, **client}}
    return load_config(PipelineConfig, base={
        "input": inp, "out_dir": str(out), "clients": clients, "caption": {"client": "srv"},
        "distil": {"client": "srv"}, "rewrite": {"client": "srv"}, "verify": {"client": "srv"}})


def counts(funnel):
    return {k: funnel[k] for k in EXPECTED}


def read(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_six_stages_over_http_exact_funnel_and_pools(tmp_path):
    inp = write_input(tmp_path)
    with ChatServer(scripted) as srv:
        funnel = run_pipeline(config(inp, tmp_path / "out", srv.url))
        assert counts(funnel) == EXPECTED and funnel["dropped"] == DROPPED
        assert funnel["new_items"] == {"collect": 0, "caption": 6, "distil": 7, "rewrite": 6, "verify": 5}
        assert [srv.served(s) for s in ("caption", "distil", "rewrite", "verify")] == [6, 7, 6, 5]
    out = tmp_path / "out"
    sft, rl = read(out / "sft.jsonl"), read(out / "rl.jsonl")
    assert [(r["id"], r["answer"], r["image"]) for r in sft] == [("a", "red", "../img/red.png"),
                                                                 ("e", "yellow", "../img/yellow.png")]
    assert sft[0]["demo"] == ("<think>Q: What colour is the background? The image says red.</think>"
                              "<answer>red</answer>")
    assert [(r["id"], r["aha_keywords"]) for r in rl] == [("g", ["wait", "again"]), ("h", ["hmm"])]
    for name, n in (("02_caption", 6), ("03_distil", 7), ("04_rewrite", 6), ("05_verify", 5)):
        rows = read(out / f"{name}.jsonl")
        assert len(rows) == n and {r["model"] for r in rows} == {"scripted-1"}
        assert all(r["prompt"] for r in rows)


def test_server_fails_then_recovers_nothing_lost_nothing_duplicated(tmp_path):
    inp = write_input(tmp_path)
    with ChatServer(scripted) as srv:
        clean = run_pipeline(config(inp, tmp_path / "clean", srv.url))
    flaky = {("caption", 1): 500, ("distil", 0): "drop", ("distil", 2): 429, ("rewrite", 1): ("sleep", 0.6),
             ("verify", 0): 503}
    seen = set()

    def transient(stage, n):  # each fault fires once: the retry of the same request succeeds
        if (stage, n) in flaky and (stage, n) not in seen:
            seen.add((stage, n))
            return flaky[(stage, n)]
    with ChatServer(scripted, transient) as srv:
        funnel = run_pipeline(config(inp, tmp_path / "flaky", srv.url, timeout_s=0.3))
    assert seen == set(flaky) and counts(funnel) == EXPECTED
    assert funnel["new_items"] == clean["new_items"]

    down = {"on": True}
    def outage(stage, n):   # 3 distil answers go through, then 500 until the server recovers
        return 500 if stage == "distil" and n >= 3 and down["on"] else None
    with ChatServer(scripted, outage) as srv:
        cfg = config(inp, tmp_path / "outage", srv.url)
        with pytest.raises(StageError, match=r"stage 'distil', item '[a-h]' .*HTTP 500 .* after 5 attempt"):
            run_pipeline(cfg)
        assert len(read(tmp_path / "outage" / "03_distil.jsonl")) == 3
        down["on"] = False
        resumed = run_pipeline(cfg)
    assert counts(resumed) == EXPECTED
    assert resumed["new_items"] == {"collect": 0, "caption": 0, "distil": 4, "rewrite": 6, "verify": 5}
    for run in ("flaky", "outage"):
        for name in ("02_caption", "03_distil", "04_rewrite", "05_verify", "sft", "rl"):
            got = read(tmp_path / run / f"{name}.jsonl")
            want = read(tmp_path / "clean" / f"{name}.jsonl")
            assert len({r["key"] for r in got}) == len(got)                # no duplicates
            assert sorted(got, key=lambda r: r["key"]) == sorted(want, key=lambda r: r["key"])


def test_client_error_names_stage_item_and_status_without_retrying(tmp_path):
    inp = write_input(tmp_path)
    with ChatServer(scripted, lambda stage, n: 401) as srv:
        with pytest.raises(StageError, match=r"stage 'caption', item 'a' .*HTTP 401 .* after 1 attem") as e:
            run_pipeline(config(inp, tmp_path / "out", srv.url, concurrency=1))
        assert e.value.status == 401 and len(srv.log) == 1
    with ChatServer(scripted) as srv:
        cfg = config(inp, tmp_path / "out2", srv.url.replace("/v1", "/v2"), concurrency=1)
        with pytest.raises(StageError, match="HTTP 404"):
            run_pipeline(cfg)


def test_real_tiny_model_behind_the_server(tmp_path):
    local = LocalChatClient(load_model("tiny-llm"))
    params_seen = []

    def respond(body):
        params_seen.append((body["temperature"], body["max_tokens"]))
        return local.chat(body["messages"], temperature=body["temperature"], max_tokens=body["max_tokens"])
    rows = [{"id": f"t{i}", "image": "img/red.png", "question": f"q{i} colour?", "answer": "red",
             "scene_text": f"the background is red {i}"} for i in range(3)]
    (tmp_path / "img").mkdir()
    Image.new("RGB", (4, 4), "red").save(tmp_path / "img" / "red.png")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with ChatServer(respond) as srv:
        cfg = config(str(tmp_path / "in.jsonl"), tmp_path / "out", srv.url, model="tiny-llm", concurrency=2)
        cfg.caption.source, cfg.distil.require_think = "scene_text", False
        cfg.distil.max_tokens = cfg.rewrite.max_tokens = 6
        cfg.distil.system, cfg.rewrite.prompt = "Think.", "Rewrite: {trace}"   # short byte-level prompts
        cfg.verify.prompt = "Q {question} gold {gold} got {answer}. Yes or No?"
        funnel = run_pipeline(cfg)
    out = tmp_path / "out"
    distil = read(out / "03_distil.jsonl")
    assert len(distil) == 3 and {r["model"] for r in distil} == {"tiny-llm"}
    for r in distil:   # the HTTP round trip returns exactly what the model generates
        row = rows[int(r["item"][1:])]
        user = cfg.distil.prompt.format(caption=row["scene_text"], question=row["question"])
        direct = local.chat([{"role": "system", "content": cfg.distil.system},
                             {"role": "user", "content": user}], temperature=0.0, max_tokens=6)
        assert r["response"] == direct and r["params"] == {"temperature": 0.0, "max_tokens": 6}
    assert (0.0, 6) in params_seen and (0.0, 8) in params_seen
    traces = {r["item"]: r["response"].strip() for r in distil}
    rewrites = read(out / "04_rewrite.jsonl")   # identical traces share one rewrite request
    assert len(rewrites) == len(set(traces.values()))
    rewrite_of = {traces[r["item"]]: r["response"].strip() for r in rewrites}
    kept = sum(word_change(t, rewrite_of[t]) <= 15 for t in traces.values())
    verdicts = [parse_verdict(r["response"]) for r in read(out / "05_verify.jsonl")]
    assert (funnel["distil"], funnel["rewrite"], funnel["verify"]) == (3, kept, verdicts.count(True))


def test_cli_entry_points_run_a_yaml_recipe_with_overrides(tmp_path, capsys):
    import argparse

    import yaml

    from duotune.pipeline import add_pipeline_arguments, run_pipeline_command
    inp = write_input(tmp_path)
    with ChatServer(scripted) as srv:
        cfg = config(inp, tmp_path / "out", srv.url)
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        parser = argparse.ArgumentParser()
        add_pipeline_arguments(parser)
        args = parser.parse_args(["run", str(tmp_path / "p.yaml"), f"out_dir={tmp_path / 'cli'}",
                                  "rewrite.max_word_change=16"])
        assert run_pipeline_command(args) == 0
    funnel = json.loads((tmp_path / "cli" / "funnel.json").read_text())
    assert counts(funnel) == {**EXPECTED, "rewrite": 6, "verify": 5, "sft": 3}   # [long16] now kept
    assert "sft pool:" in capsys.readouterr().out


def test_tiny_vlm_captions_the_image_sent_over_http(tmp_path):
    vlm = LocalChatClient(load_model("tiny-qwen2-vl"))

    def respond(body):
        if stage_of(body["messages"]) == "caption":
            return vlm.chat(body["messages"], temperature=body["temperature"], max_tokens=body["max_tokens"])
        return "No think block here."
    inp = write_input(tmp_path)
    with ChatServer(respond) as srv:
        cfg = config(inp, tmp_path / "out", srv.url, image_max_side=4)
        cfg.caption.max_tokens = 5
        funnel = run_pipeline(cfg)
    assert funnel["caption"] == 7 and funnel["new_items"]["caption"] == 6   # one caption per image
    assert funnel["distil"] == 0 and funnel["dropped"]["distil"] == {"no_think": 7}
    image_of = {rid: colour for rid, colour, _ in ROWS}
    for r in read(tmp_path / "out" / "02_caption.jsonl"):
        part = image_part(str(tmp_path / "img" / f"{image_of[r['item']]}.png"), max_side=4)
        direct = vlm.chat([{"role": "user", "content": [part, {"type": "text", "text": cfg.caption.prompt}]}],
                          temperature=0.0, max_tokens=5)
        assert r["response"] == direct

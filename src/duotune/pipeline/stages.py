"""The six stages of the VLAA-Thinking distillation pipeline (SPEC 4), each a function of rows.

collect -> caption -> distil -> rewrite -> verify -> split. A model stage stores one row per content
hash (input + prompt + model + parameters) and recomputes its keep/drop decision from the stored
response, so reruns resume and changed thresholds need no new requests.
Imports `duotune.pipeline.{config,clients,store}`, `duotune.data.images`, `duotune.errors` only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from duotune.data.images import load_image
from duotune.errors import DataError
from duotune.pipeline.clients import ChatClient, image_part
from duotune.pipeline.config import PipelineConfig, StageConfig
from duotune.pipeline.store import Job, StageStore, content_hash, run_jobs, write_jsonl

# SPEC 4 / VLAA-Thinking: a trace containing any of these (case-insensitive substring) shows
# self-reflection ("aha") and goes to the RL pool; the rest is SFT data.
AHA_KEYWORDS = ("wait", "again", "double-check", "hmm", "mistake", "alternatively", "check",
                "i should confirm")

STAGE_FILES = {"collect": "01_collect.jsonl", "caption": "02_caption.jsonl", "distil": "03_distil.jsonl",
               "rewrite": "04_rewrite.jsonl", "verify": "05_verify.jsonl"}

_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)

Rows = list[dict[str, Any]]


def aha_keywords(text: str) -> list[str]:
    """The aha keywords that occur in `text` (case-insensitive substrings), in SPEC order."""
    low = text.lower()
    return [k for k in AHA_KEYWORDS if k in low]


def word_change(before: str, after: str) -> int:
    """|words(after) - words(before)|, words split on whitespace (the rewrite rule, SPEC 4)."""
    return abs(len(after.split()) - len(before.split()))


def final_answer(trace: str) -> str:
    """What the judge grades: the last <answer>...</answer>, else the text after </think>, else all."""
    tagged = _ANSWER_RE.findall(trace)
    if tagged:
        return tagged[-1].strip()
    return trace.rsplit("</think>", 1)[-1].strip()


def parse_verdict(text: str) -> bool | None:
    """The judge's Yes/No (its first word after any <think> block); None when it is neither."""
    words = re.findall(r"[a-z]+", text.rsplit("</think>", 1)[-1].lower())
    if not words or words[0] not in ("yes", "no"):
        return None
    return words[0] == "yes"


def collect(cfg: PipelineConfig) -> tuple[Rows, Counter[str], int]:
    """Stage 1: read rows, check each image decodes, keep the first row per (image content,
    question). Returns (rows, dropped reasons, number of input rows)."""
    src = Path(cfg.input)
    if not src.is_file():
        raise DataError("input JSONL not found; set `input` to a file of image/question/answer rows",
                        file=str(src))
    rows, dropped, seen, n_in = [], Counter(), set(), 0
    with open(src, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            n_in += 1
            row = _parse_row(line, str(src), n)
            path = Path(row["image"]) if os.path.isabs(row["image"]) else src.parent / row["image"]
            try:
                load_image(path, file=str(src), row=n)  # full decode: corrupt files fail here
            except DataError:
                if cfg.on_bad_image == "error":
                    raise
                dropped["bad_image"] += 1
                continue
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            if (sha, row["question"]) in seen:
                dropped["duplicate"] += 1
                continue
            seen.add((sha, row["question"]))
            rows.append({
                "key": content_hash("collect", sha, row["question"], row["answer"]),
                "id": str(row.get("id", f"row{n}")), "line": n, "image": str(path.resolve()),
                "image_sha": sha, "question": row["question"], "answer": row["answer"],
                "reward_type": row.get("reward_type") or cfg.default_reward_type,
                "scene_text": row.get("scene_text")})
    write_jsonl(Path(cfg.out_dir) / STAGE_FILES["collect"], rows)
    return rows, dropped, n_in


def _parse_row(line: str, file: str, n: int) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e.msg})", file=file, row=n) from None
    if not isinstance(row, dict):
        raise DataError("a row must be a JSON object", file=file, row=n)
    for field in ("image", "question", "answer"):
        value = row.get(field)
        if field == "answer" and isinstance(value, (int, float)) and not isinstance(value, bool):
            row[field] = value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise DataError("missing or not a non-empty string", file=file, row=n, field=field)
    return row


def _model_stage(name: str, cfg: PipelineConfig, stage: StageConfig, client: ChatClient,
                 jobs: list[Job], prompt: str) -> tuple[StageStore, int]:
    """Run the jobs not stored yet through `client`; every stored row records prompt and model."""
    store = StageStore(Path(cfg.out_dir) / STAGE_FILES[name])
    params = stage.params()
    record = {"stage": name, "model": client.name, "prompt": prompt, "params": params}
    chat = functools.partial(client.chat, **params)
    new = run_jobs(name, store, jobs, chat, client.concurrency, record)
    return store, new


def caption(rows: Rows, cfg: PipelineConfig, client: ChatClient | None) -> tuple[Rows, Counter[str], int]:
    """Stage 2: one caption per unique image (model), or the row's exact `scene_text`."""
    c = cfg.caption
    if c.source == "scene_text":
        store = StageStore(Path(cfg.out_dir) / STAGE_FILES["caption"])
        new = 0
        for row in rows:
            if not isinstance(row["scene_text"], str) or not row["scene_text"].strip():
                raise DataError("caption.source=scene_text needs a non-empty `scene_text`; add it or set "
                                "caption.source=model", file=cfg.input, row=row["line"], field="scene_text")
            row["caption_key"] = key = content_hash("caption", "scene_text", row["scene_text"])
            if key not in store:
                store.append({"stage": "caption", "model": "scene_text", "prompt": None, "params": {},
                              "key": key, "item": row["id"], "response": row["scene_text"]})
                new += 1
    else:
        assert client is not None
        max_side = cfg.clients[c.client].image_max_side
        jobs = []
        for row in rows:
            row["caption_key"] = key = content_hash("caption", row["image_sha"], c.prompt, client.name,
                                                    c.params())
            jobs.append(Job(key, row["id"], functools.partial(
                _caption_messages, row["image"], c.prompt, max_side, cfg.input, row["line"])))
        store, new = _model_stage("caption", cfg, c, client, jobs, c.prompt)
    return (*_keep(rows, store, "caption_key", "caption", lambda _, text: None if text else "empty"), new)


def _caption_messages(image: str, prompt: str, max_side: int | None, file: str, line: int) -> Rows:
    return [{"role": "user", "content": [image_part(image, max_side=max_side, file=file, row=line),
                                         {"type": "text", "text": prompt}]}]


def distil(rows: Rows, cfg: PipelineConfig, client: ChatClient) -> tuple[Rows, Counter[str], int]:
    """Stage 3: a text-only reasoner answers from the caption as if it saw the image."""
    d = cfg.distil
    jobs = []
    for row in rows:
        user = d.prompt.format(caption=row["caption"], question=row["question"])
        messages = [{"role": "system", "content": d.system}, {"role": "user", "content": user}]
        row["distil_key"] = key = content_hash("distil", messages, client.name, d.params())
        jobs.append(Job(key, row["id"], functools.partial(list, messages)))
    store, new = _model_stage("distil", cfg, d, client, jobs, f"{d.system}\n---\n{d.prompt}")

    def decide(row: dict[str, Any], text: str) -> str | None:
        if not text:
            return "empty"
        return "no_think" if d.require_think and not _THINK_RE.search(text) else None
    return (*_keep(rows, store, "distil_key", "trace", decide), new)


def rewrite(rows: Rows, cfg: PipelineConfig, client: ChatClient) -> tuple[Rows, Counter[str], int]:
    """Stage 4: caption/description wording -> "the image"; drop if the length moves > 15 words."""
    r = cfg.rewrite
    jobs = []
    for row in rows:
        messages = [{"role": "user", "content": r.prompt.format(trace=row["trace"])}]
        row["rewrite_key"] = key = content_hash("rewrite", messages, client.name, r.params())
        jobs.append(Job(key, row["id"], functools.partial(list, messages)))
    store, new = _model_stage("rewrite", cfg, r, client, jobs, r.prompt)

    def decide(row: dict[str, Any], text: str) -> str | None:
        return "length_change" if word_change(row["trace"], text) > r.max_word_change else None
    return (*_keep(rows, store, "rewrite_key", "demo", decide), new)


def verify(rows: Rows, cfg: PipelineConfig, client: ChatClient) -> tuple[Rows, Counter[str], int]:
    """Stage 5: an LLM judge compares the trace's final answer with the gold; keep "Yes"."""
    v = cfg.verify
    jobs = []
    for row in rows:
        text = v.prompt.format(question=row["question"], gold=row["answer"],
                               answer=final_answer(row["demo"]))
        messages = [{"role": "user", "content": text}]
        row["verify_key"] = key = content_hash("verify", messages, client.name, v.params())
        jobs.append(Job(key, row["id"], functools.partial(list, messages)))
    store, new = _model_stage("verify", cfg, v, client, jobs, v.prompt)

    def decide(row: dict[str, Any], text: str) -> str | None:
        verdict = parse_verdict(text)
        return None if verdict else ("judged_no" if verdict is False else "unparsed_verdict")
    return (*_keep(rows, store, "verify_key", "verdict", decide), new)


def _keep(rows: Rows, store: StageStore, key_field: str, out_field: str,
          decide: Callable[[dict[str, Any], str], str | None]) -> tuple[Rows, Counter[str]]:
    """Attach each row's stored response as `out_field`; keep rows `decide` gives no drop reason."""
    kept, dropped = [], Counter()
    for row in rows:
        text = store.rows[row[key_field]]["response"].strip()
        reason = decide(row, text)
        if reason is None:
            kept.append({**row, out_field: text})
        else:
            dropped[reason] += 1
    return kept, dropped


def split(rows: Rows, cfg: PipelineConfig) -> tuple[Rows, Rows]:
    """Stage 6: traces with an aha keyword -> RL pool, the rest -> SFT pool; written as trainer rows
    (question, image relative to out_dir, answer, demo, reward_type)."""
    out = Path(cfg.out_dir).resolve()
    sft, rl = [], []
    for row in rows:
        hits = aha_keywords(row["demo"])
        record = {"id": row["id"], "question": row["question"], "image": os.path.relpath(row["image"], out),
                  "answer": row["answer"], "demo": row["demo"], "reward_type": row["reward_type"],
                  "aha_keywords": hits, "key": row["verify_key"]}
        (rl if hits else sft).append(record)
    write_jsonl(out / "sft.jsonl", sft)
    write_jsonl(out / "rl.jsonl", rl)
    return sft, rl

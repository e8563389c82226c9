"""Config models of the six-stage distillation pipeline (SPEC 4): clients, stages, paths.

Every field carries its description (the CLI help). Imports pydantic and `duotune.config`/`errors` only.
"""

from __future__ import annotations

import string
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from duotune.config import Cfg
from duotune.errors import ConfigError

CAPTION_PROMPT = (
    "Describe this image in structured detail for someone who cannot see it: list every object with "
    "its colour, shape, size and position, any text or numbers, and how the objects relate. Only "
    "describe; do not answer any question.")

DISTIL_SYSTEM = (
    "You are given a detailed description of an image in place of the image itself. Reason and "
    "answer as if you were looking at the image directly; never mention a description or caption. "
    "Think step by step inside <think> </think>, then give the final answer inside <answer> </answer>.")

DISTIL_PROMPT = "Image description:\n{caption}\n\nQuestion: {question}"

REWRITE_PROMPT = (
    "Rewrite the text below so that every mention of a caption or a description refers to \"the "
    "image\" instead (e.g. \"the caption says\" -> \"the image shows\"). Change nothing else: keep all "
    "other words, the <think> </think> and <answer> </answer> tags and the final answer. Output only "
    "the rewritten text.\n\nText:\n{trace}")

VERIFY_PROMPT = (
    "You are a strict grader.\nQuestion: {question}\nReference answer: {gold}\nModel answer: {answer}\n"
    "Is the model answer equivalent to the reference answer? Reply with exactly one word: Yes or No.")


class ClientConfig(Cfg):
    """One LLM/VLM endpoint: an OpenAI-compatible HTTP server or a local transformers model."""

    kind: Literal["http", "local"] = Field(
        "http", description="http: POST {base_url}/chat/completions (vLLM, TGI, llama.cpp, hosted APIs); "
                            "local: a transformers model loaded with duotune.models.load_model")
    model: str = Field(..., description="model name sent to the server (http) or model alias/path (local)")
    base_url: str | None = Field(None, description="server base URL ending before /chat/completions, "
                                                   "e.g. http://127.0.0.1:8000/v1; unset: base_url_env")
    base_url_env: str = Field("OPENAI_BASE_URL", description="environment variable holding the base URL")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key "
                                                           "(sent as a Bearer token when set)")
    concurrency: int = Field(4, ge=1, description="requests in flight at once (http); local runs one")
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout in seconds (http)")
    max_retries: int = Field(5, ge=0, description="retries after a 5xx, 429, timeout or connection error")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles on each retry")
    max_backoff_s: float = Field(30.0, ge=0, description="cap on one retry delay (also caps Retry-After)")
    image_max_side: int | None = Field(1024, ge=1, description="shrink images so the longer side is at "
                                                               "most this many pixels before sending")


class StageConfig(Cfg):
    """Shared settings of a model-backed stage."""

    client: str = Field(..., description="name of an entry in `clients`")
    temperature: float = Field(0.0, ge=0, description="sampling temperature (0 = greedy)")
    max_tokens: int = Field(1024, ge=1, description="most new tokens per response")
    extra: dict[str, Any] = Field(default_factory=dict,
                                  description="further request fields sent as is (top_p, stop, seed, ...)")

    def params(self) -> dict[str, Any]:
        """Request parameters of this stage (part of every item's content hash)."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, **self.extra}


def _check_template(template: str, allowed: tuple[str, ...], where: str) -> str:
    """A prompt template may use only its stage's `{fields}`; a typo fails at load, not mid-run."""
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise ConfigError(f"{where}: bad template ({e}); write literal braces as {{{{ }}}}") from None
    unknown = sorted(names - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown placeholder(s) {unknown}; allowed: {list(allowed)}")
    return template


class CaptionConfig(StageConfig):
    client: str = Field("captioner", description="name of an entry in `clients` (a VLM)")
    source: Literal["model", "scene_text"] = Field(
        "model", description="model: caption each unique image with the client; scene_text: use the "
                             "row's exact `scene_text` (generated images, as CLEVR-Math did)")
    prompt: str = Field(CAPTION_PROMPT, description="caption instruction sent with the image")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        return _check_template(v, (), "caption.prompt")


class DistilConfig(StageConfig):
    client: str = Field("reasoner", description="name of an entry in `clients` (a text reasoning LLM)")
    system: str = Field(DISTIL_SYSTEM, description="system prompt: act as if seeing the image")
    prompt: str = Field(DISTIL_PROMPT, description="user turn; fields {caption} {question}")
    require_think: bool = Field(True, description="drop traces without a closed <think>...</think> block")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        return _check_template(v, ("caption", "question"), "distil.prompt")


class RewriteConfig(StageConfig):
    client: str = Field("rewriter", description="name of an entry in `clients` (a cheap LLM)")
    max_tokens: int = Field(1536, ge=1, description="most new tokens (room for the whole trace)")
    prompt: str = Field(REWRITE_PROMPT, description="rewrite instruction; field {trace}")
    max_word_change: int = Field(15, ge=0, description="drop a rewrite whose word count differs from "
                                                       "the trace's by more than this (SPEC 4: 15)")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        return _check_template(v, ("trace",), "rewrite.prompt")


class VerifyConfig(StageConfig):
    client: str = Field("judge", description="name of an entry in `clients` (an LLM judge)")
    max_tokens: int = Field(8, ge=1, description="most new tokens of the Yes/No verdict")
    prompt: str = Field(VERIFY_PROMPT, description="judge prompt; fields {question} {gold} {answer}")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        return _check_template(v, ("question", "gold", "answer"), "verify.prompt")


class PipelineConfig(Cfg):
    """collect -> caption -> distil -> rewrite -> verify -> split (VLAA-Thinking, SPEC 4)."""

    input: str = Field(..., description="JSONL of rows with image, question, answer (+ id, reward_type, "
                                        "scene_text); relative image paths are read from its folder")
    out_dir: str = Field(..., description="output folder: stage JSONL, sft.jsonl, rl.jsonl, funnel.json")
    default_reward_type: str | None = Field(None, description="reward_type for rows that carry none")
    on_bad_image: Literal["error", "skip"] = Field(
        "error", description="a missing or unreadable image: stop naming the file and row, or skip the row")
    clients: dict[str, ClientConfig] = Field(default_factory=dict, description="named LLM/VLM endpoints")
    caption: CaptionConfig = Field(default_factory=CaptionConfig, description="stage 2: caption")
    distil: DistilConfig = Field(default_factory=DistilConfig, description="stage 3: distil")
    rewrite: RewriteConfig = Field(default_factory=RewriteConfig, description="stage 4: rewrite")
    verify: VerifyConfig = Field(default_factory=VerifyConfig, description="stage 5: verify")

    @model_validator(mode="after")
    def _clients_exist(self) -> PipelineConfig:
        needed = {"distil": self.distil.client, "rewrite": self.rewrite.client,
                  "verify": self.verify.client}
        if self.caption.source == "model":
            needed["caption"] = self.caption.client
        for stage, name in needed.items():
            if name not in self.clients:
                raise ValueError(f"{stage}.client {name!r} is not defined under `clients` "
                                 f"(defined: {sorted(self.clients) or 'none'}); add it or pick one")
        return self

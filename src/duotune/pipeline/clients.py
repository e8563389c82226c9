"""Chat clients behind one protocol, `chat(messages, **params) -> str`: OpenAI-compatible HTTP and local.

Messages use the OpenAI layout; an image is an `image_url` part holding a data URL. The HTTP client
retries 5xx/429/timeouts/connection errors with exponential backoff. Imports requests, PIL and
`duotune.data.images`; the local client imports torch/`duotune.models` lazily. Never imports trainers.
"""

from __future__ import annotations

import base64
import io
import os
import threading
import time
from typing import Any, Protocol

import requests

from duotune.data.images import load_image
from duotune.errors import ConfigError, DuotuneError
from duotune.pipeline.config import ClientConfig

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class ChatClient(Protocol):
    """What every stage needs: one chat completion as text; `name` is recorded in each row."""

    name: str
    concurrency: int

    def chat(self, messages: list[dict[str, Any]], **params: Any) -> str: ...


class ClientRequestError(DuotuneError):
    """A request failed for good; `status` is the HTTP code, or None for a connection error/timeout."""

    def __init__(self, message: str, status: int | None, attempts: int):
        self.status, self.attempts = status, attempts
        super().__init__(message)


def image_part(path: str, *, max_side: int | None = None, file: str | None = None,
               row: int | None = None) -> dict[str, Any]:
    """An OpenAI `image_url` content part: the image decoded to RGB (shrunk to `max_side`) as a PNG
    data URL, so any mode or format the server's processor would reject arrives as plain RGB PNG."""
    image = load_image(path, file=file, row=row, max_side=max_side)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return {"type": "image_url", "image_url": {"url": url}}


class HTTPChatClient:
    """POST {base_url}/chat/completions with bounded retries; thread-safe (one session per thread)."""

    def __init__(self, cfg: ClientConfig):
        base_url = cfg.base_url or os.environ.get(cfg.base_url_env)
        if not base_url:
            raise ConfigError(f"client model {cfg.model!r}: no server URL; set base_url in the config "
                              f"or the environment variable ${cfg.base_url_env} "
                              "(e.g. http://127.0.0.1:8000/v1)")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.cfg, self.name, self.concurrency = cfg, cfg.model, cfg.concurrency
        self._key = os.environ.get(cfg.api_key_env)
        self._local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def chat(self, messages: list[dict[str, Any]], **params: Any) -> str:
        body = {"model": self.cfg.model, "messages": messages, **params}
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        attempts = self.cfg.max_retries + 1
        for attempt in range(attempts):
            status, detail, retry_after = self._post(body, headers)
            if status == 200:
                return _message_text(detail, self.url)
            if status is not None and status not in RETRY_STATUS:
                break  # 4xx such as 400/401/404: retrying cannot help
            if attempt + 1 < attempts:
                time.sleep(self._delay(attempt, retry_after))
        what = f"HTTP {status}" if status is not None else "connection error"
        raise ClientRequestError(f"{what} from {self.url} after {attempt + 1} attempt(s): "
                                 f"{str(detail)[:300]}", status, attempt + 1)

    def _post(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int | None, Any, float | None]:
        """(status, parsed JSON or error text, Retry-After seconds); status None = no HTTP answer."""
        try:
            r = self._session().post(self.url, json=body, headers=headers, timeout=self.cfg.timeout_s)
        except requests.RequestException as e:  # refused, reset, dropped, timed out
            self._local.__dict__.pop("session", None)  # a broken pooled connection must not be reused
            return None, f"{type(e).__name__}: {e}", None
        if r.status_code != 200:
            return r.status_code, r.text, _retry_after(r.headers.get("Retry-After"))
        try:
            return 200, r.json(), None
        except ValueError:
            return 502, f"response is not JSON: {r.text[:200]!r}", None

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff (backoff_s * 2**attempt), or the server's Retry-After, both capped."""
        delay = retry_after if retry_after is not None else self.cfg.backoff_s * 2 ** attempt
        return min(delay, self.cfg.max_backoff_s)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # the HTTP-date form; fall back to our own backoff
        return None


def _message_text(payload: Any, url: str) -> str:
    """The assistant text; a reasoning server's separate `reasoning_content` (vLLM/SGLang reasoning
    parsers, DeepSeek-R1 APIs) is folded back in as <think>...</think> so distil sees one trace."""
    try:
        message = payload["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        raise ClientRequestError(f"malformed response from {url}: {str(payload)[:200]}", 200, 1) from None
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning and "<think>" not in content:
        content = f"<think>{reasoning}</think>{content}"
    return content


class LocalChatClient:
    """Generate with a transformers `ModelBundle` (model, tokenizer, processor, is_vlm, name)."""

    concurrency = 1  # one forward at a time; generate on shared weights is not thread-safe

    def __init__(self, bundle: Any):
        self.bundle, self.name = bundle, bundle.name
        self._lock = threading.Lock()

    def chat(self, messages: list[dict[str, Any]], temperature: float = 0.0, max_tokens: int = 256,
             **params: Any) -> str:
        import torch

        hf_messages, images = _to_hf_messages(messages)
        if images and not self.bundle.is_vlm:
            raise ConfigError(f"local model {self.name!r} is text-only and cannot read images; use a VLM "
                              "client for captioning or set caption.source=scene_text")
        with self._lock:
            inputs = self._encode(hf_messages, images)
            gen: dict[str, Any] = {"max_new_tokens": max_tokens, "do_sample": temperature > 0}
            if temperature > 0:
                gen.update(temperature=temperature, top_p=params.get("top_p", 1.0))
            pad = self.bundle.tokenizer.pad_token_id
            gen["pad_token_id"] = pad if pad is not None else self.bundle.tokenizer.eos_token_id
            with torch.no_grad():
                out = self.bundle.model.generate(**inputs, **gen)
        new = out[0, inputs["input_ids"].shape[1]:]
        return self.bundle.tokenizer.decode(new, skip_special_tokens=True)

    def _encode(self, hf_messages: list[dict[str, Any]], images: list[Any]) -> dict[str, Any]:
        model_device = next(self.bundle.model.parameters()).device
        if images:
            proc = self.bundle.processor
            text = proc.apply_chat_template(hf_messages, add_generation_prompt=True, tokenize=False)
            enc = proc(text=[text], images=images, return_tensors="pt")
        else:
            flat = [{"role": m["role"], "content": _flatten_text(m["content"])} for m in hf_messages]
            text = self.bundle.tokenizer.apply_chat_template(flat, add_generation_prompt=True,
                                                             tokenize=False)
            enc = self.bundle.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        return {k: v.to(model_device) for k, v in enc.items()}


def _to_hf_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """OpenAI parts -> transformers parts ({"type": "image"} + PIL images decoded from data URLs)."""
    out, images = [], []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            parts = []
            for p in content:
                if p.get("type") == "image_url":
                    data = p["image_url"]["url"].split(",", 1)[1]
                    images.append(load_image(base64.b64decode(data)))
                    parts.append({"type": "image"})
                else:
                    parts.append({"type": "text", "text": p["text"]})
            content = parts
        out.append({"role": m["role"], "content": content})
    return out, images


def _flatten_text(content: Any) -> str:
    return content if isinstance(content, str) else "".join(p["text"] for p in content)


def build_client(cfg: ClientConfig) -> ChatClient:
    """Make the client a `clients:` entry names; local models load through `duotune.models`."""
    if cfg.kind == "http":
        return HTTPChatClient(cfg)
    from duotune.models import load_model

    return LocalChatClient(load_model(cfg.model))

"""`open_rm`: the VLAA-Thinking reference-relative reward for open-ended answers (SPEC 3).

R = 1 - exp(-beta_s * (S(pred) - S(ref))) if S(pred) > S(ref) else 0, beta_s = 0.2, with S a frozen
scorer: any callable or a transformers sequence-classification model (first logit). Imports torch
and transformers lazily, only when a model is used.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

from duotune.errors import ConfigError
from duotune.rewards.base import Reward
from duotune.rewards.extract import extract_answer


def relative_reward(s_pred: float, s_ref: float, beta_s: float = 0.2) -> float:
    """1 - exp(-beta_s (S(pred) - S(ref))) when the prediction outscores the reference, else 0."""
    return 1.0 - math.exp(-beta_s * (s_pred - s_ref)) if s_pred > s_ref else 0.0


def _question_text(value: Any) -> str:
    """A question from a column value: plain text, or the last user message of a chat prompt."""
    if isinstance(value, list):
        users = [m for m in value if isinstance(m, dict) and m.get("role") == "user"] or value
        content = users[-1].get("content", "") if isinstance(users[-1], dict) else users[-1]
        if isinstance(content, list):  # VLM parts: keep the text parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        return str(content)
    return "" if value is None else str(value)


class ModelScorer:
    """S(question, answer) = first logit of a sequence-classification model on `template`."""

    def __init__(self, model: Any, tokenizer: Any = None, template: str = "{question}\n{answer}",
                 batch_size: int = 8, max_length: int = 1024):
        if isinstance(model, str):
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            model = AutoModelForSequenceClassification.from_pretrained(model)
        if tokenizer is None:
            raise ConfigError("open_rm: a reward model needs its tokenizer; pass tokenizer=... "
                              "(or give the model as a local path holding both)")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id  # batched scoring finds the last token
        self.model, self.tokenizer = model.eval(), tokenizer
        self.template, self.batch_size, self.max_length = template, batch_size, max_length

    def __call__(self, questions: Sequence[str], answers: Sequence[str]) -> list[float]:
        import torch

        texts = [self.template.format(question=q, answer=a) for q, a in zip(questions, answers)]
        device = next(self.model.parameters()).device
        out: list[float] = []
        with torch.no_grad():
            for k in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[k:k + self.batch_size], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(device)
                out.extend(self.model(**enc).logits[:, 0].float().tolist())
        return out


class OpenRM(Reward):
    """Reference-relative reward-model score 1 - exp(-beta_s (S(pred) - S(ref))) if S(pred) > S(ref).

    scorer: a callable `(questions, answers[, images]) -> scores`, or a transformers
    sequence-classification model (object or local path; with `tokenizer`). The reference answer is
    the `answer` column; the question is the `question`, `prompt` or `prompts` column when present.
    The prediction is the extracted answer; a completion without one scores 0.
    """

    name = "open_rm"

    def __init__(self, scorer: Any = None, tokenizer: Any = None, beta_s: float = 0.2,
                 template: str = "{question}\n{answer}", batch_size: int = 8):
        super().__init__()
        if scorer is None:
            raise ConfigError("open_rm needs a scorer: pass scorer=<callable (questions, answers) -> "
                              "scores> or a sequence-classification model (path or object)")
        if not callable(scorer) or hasattr(scorer, "config"):
            scorer = ModelScorer(scorer, tokenizer, template, batch_size)
        self.scorer, self.beta_s = scorer, float(beta_s)
        try:
            self._takes_images = "images" in inspect.signature(scorer).parameters
        except (TypeError, ValueError):
            self._takes_images = False

    def _scores(self, questions: list[str], answers: list[str], images: list[Any] | None) -> list[float]:
        if not questions:
            return []
        kw = {"images": images} if self._takes_images and images is not None else {}
        scores = [float(s) for s in self.scorer(questions, answers, **kw)]
        if len(scores) != len(questions):
            raise ConfigError(f"open_rm scorer returned {len(scores)} scores for {len(questions)} texts")
        return scores

    def score(self, completions: list[str], columns: dict[str, Any]) -> list[float | None]:
        qcol = next((columns[k] for k in ("question", "prompt", "prompts") if k in columns), None)
        questions = [_question_text(qcol[i]) if qcol is not None else "" for i in range(len(completions))]
        refs, imgs = list(columns["answer"]), columns.get("images")
        preds = [extract_answer(c) for c in completions]
        live = [i for i, (p, r) in enumerate(zip(preds, refs)) if p is not None and r is not None]
        # Each prompt's G rollouts share one reference: score every distinct (question, ref) once.
        first: dict[tuple[str, str], int] = {}
        for i in live:
            first.setdefault((questions[i], str(refs[i])), i)
        ref_keys = list(first)
        pick = (lambda ids: [imgs[i] for i in ids]) if imgs is not None else (lambda ids: None)
        ref_scores = dict(zip(ref_keys, self._scores([q for q, _ in ref_keys], [r for _, r in ref_keys],
                                                     pick([first[k] for k in ref_keys]))))
        pred_scores = self._scores([questions[i] for i in live], [preds[i] for i in live], pick(live))
        out: list[float | None] = [None if r is None else 0.0 for r in refs]
        for i, s in zip(live, pred_scores):
            out[i] = relative_reward(s, ref_scores[(questions[i], str(refs[i]))], self.beta_s)
        return out

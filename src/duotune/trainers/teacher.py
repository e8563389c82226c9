"""The frozen teacher of on-policy distillation: loaded once per stage (any alias, hub id or path,
a duotune checkpoint included) and checked to share the student's tokenizer, since it scores the
student's token ids as they are. Imports `duotune.models` only.
"""

from __future__ import annotations

from typing import Any

import torch

from duotune.errors import ConfigError
from duotune.models import load_model


def tokenizer_of(bundle: Any) -> Any:
    return bundle.tokenizer or getattr(bundle.processor, "tokenizer", None)


def check_same_tokenizer(student: Any, teacher: Any, student_name: str, teacher_name: str) -> None:
    """ConfigError naming both models and the first token that differs, unless the vocabularies
    (token -> id) are identical."""
    a, b = tokenizer_of(student).get_vocab(), tokenizer_of(teacher).get_vocab()
    if a == b:
        return
    diff = sorted(set(a.items()) ^ set(b.items()), key=lambda kv: kv[1])[:1]
    what = f"e.g. {diff[0][0]!r} -> {diff[0][1]}" if diff else ""
    raise ConfigError(f"teacher {teacher_name!r} and student {student_name!r} do not share a tokenizer "
                      f"({len(b)} vs {len(a)} tokens; {what} is in one only); the teacher scores the "
                      f"student's token ids, so pick a teacher of the same family (e.g. a larger SmolLM2 "
                      f"for SmolLM2) or a checkpoint trained from the student")


def load_teacher(spec: Any, student: Any, student_name: str, dtype: torch.dtype, device: Any) -> Any:
    """The teacher model named by `spec` (a `TeacherSpec`), frozen, on `device`."""
    teacher = load_model(spec.model, dtype=dtype, device=device)
    check_same_tokenizer(student, teacher, student_name, spec.model)
    return teacher.model.eval().requires_grad_(False)

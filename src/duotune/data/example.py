"""The `Example` record: one prompt with its gold answer, optional demonstration and images.

Pure data; imports nothing from duotune.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Example:
    """One training or evaluation item.

    prompt: chat messages without the assistant answer, e.g. [{"role": "user", "content": "..."}];
        a message's content may be a list of parts ({"type": "image"}, {"type": "text", ...}) for VLMs.
    answer: the gold answer string the reward compares against (column `answer` for rewards).
    demo: a demonstration assistant turn (SFT target, LUFFY/SRFT off-policy member), or None.
    reward_type: routing key for the `mixed` reward (digit, mcq, math, iou, open), or None.
    images: PIL images, file paths or raw bytes, in the order of the image parts in `prompt`.
    meta: anything else the source row carried (subject, level, options permutation, ...).
    """

    id: str
    prompt: list[dict[str, Any]]
    answer: str | None = None
    demo: str | None = None
    reward_type: str | None = None
    images: list[Any] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def columns(self) -> dict[str, Any]:
        """The row's fields as reward columns (TRL convention: `answer`, `reward_type`, meta keys)."""
        cols = dict(self.meta)
        cols.update(answer=self.answer, reward_type=self.reward_type, id=self.id)
        return cols

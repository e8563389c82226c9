"""Library progress bars (transformers' "Loading weights" / "Writing model shards", huggingface_hub's
downloads, datasets' bars) switched on or off with duotune's own `progress` setting.

Imports transformers' logging utilities (and datasets' when it is loaded already); no torch.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator


def _switches() -> list[tuple]:
    """(is_enabled, enable, disable) of each library's global progress-bar switch; datasets' only
    once something has imported it (importing it just for this costs seconds)."""
    from transformers.utils import logging as tf  # its switch also covers huggingface_hub's bars

    out = [(tf.is_progress_bar_enabled, tf.enable_progress_bar, tf.disable_progress_bar)]
    if "datasets" in sys.modules:
        ds = importlib.import_module("datasets.utils.tqdm")
        out.append((ds.is_progress_bar_enabled, ds.enable_progress_bars, ds.disable_progress_bars))
    return out


def _apply(states: list[bool]) -> None:
    for (_, enable, disable), on in zip(_switches(), states):
        (enable if on else disable)()


@contextlib.contextmanager
def library_progress(enabled: bool) -> Iterator[None]:
    """Inside the block the libraries' bars are on exactly when `enabled`; restored afterwards."""
    before = [bool(is_on()) for is_on, _, _ in _switches()]
    _apply([enabled] * len(before))
    try:
        yield
    finally:
        _apply(before)

"""Shared matplotlib plumbing: a headless pyplot and one way to write a figure to PNG.

Imports matplotlib lazily (only when a plot is drawn); nothing from the rest of duotune.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display on servers and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, out: str | Path, dpi: int = 90) -> Path:
    """Lay out, write `out` (creating its folder) and close `fig`; returns the path."""
    out = Path(out)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    pyplot().close(fig)
    return out

"""Where duotune finds shared data and keeps its caches ($DUOTUNE_DATA, $DUOTUNE_CACHE).

Imports only `duotune.errors`.
"""

from __future__ import annotations

import os
from pathlib import Path

from duotune.errors import DuotuneError

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """The shared benchmark/training data folder: $DUOTUNE_DATA, else ../shared/data beside the repo."""
    env = os.environ.get("DUOTUNE_DATA")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        raise DuotuneError(
            f"shared data folder not found at {path}; set $DUOTUNE_DATA to the folder that holds "
            "gsm8k/, math500/, ... (see ../shared/data/README.md)"
        )
    return path


def cache_dir() -> Path:
    """Cache folder for converted models etc.: $DUOTUNE_CACHE, else ~/.cache/duotune."""
    env = os.environ.get("DUOTUNE_CACHE")
    path = Path(env) if env else Path.home() / ".cache" / "duotune"
    path.mkdir(parents=True, exist_ok=True)
    return path

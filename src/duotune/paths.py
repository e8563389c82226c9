"""Where duotune finds shared data and keeps its caches ($DUOTUNE_DATA, $DUOTUNE_CACHE), and how big a
run folder is.

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


def folder_size(path: Path) -> int:
    """Bytes in the files under `path` (0 when it does not exist); links are not followed."""
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def human_size(n: int) -> str:
    """1536 -> '1.5 kB', 1.6e9 -> '1.6 GB' (powers of 1000, as `du --si`)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")

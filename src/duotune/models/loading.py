"""`load_model`: a registered alias, a local folder (a duotune checkpoint included) or a hub id ->
`ModelBundle`, through transformers' Auto classes.

Imports torch/transformers and `duotune.models.bundle`/`duotune.models.tiny` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

from duotune.errors import DuotuneError, UnknownNameError
from duotune.models.bundle import MODELS, ModelBundle, resolve_device, resolve_dtype
from duotune.models.bundle import freeze_vision_tower as freeze_tower
from duotune.models.tiny import IMAGE_ONLY_PROCESSORS


def load_model(name_or_path: str | Path, *, dtype: torch.dtype | str | None = None,
               device: torch.device | str | None = None, freeze_vision_tower: bool = False) -> ModelBundle:
    """Load a policy by alias (`duotune list` shows them), local folder or hub id.

    dtype: default fp32 on CPU, bf16 on CUDA. device: default CUDA when available, else CPU.
    freeze_vision_tower: stop gradients into a VLM's vision encoder (its projector still trains).
    The tokenizer always has a pad token (the EOS token when the checkpoint sets none).
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    name = str(name_or_path)
    if name in MODELS:
        bundle = MODELS.get(name)(dt)
    elif Path(name).is_dir():
        bundle = _load_local(model_folder(Path(name)), dt, name)
    elif _looks_local(name):
        raise DuotuneError(f"model {name!r}: no such folder; give an existing model folder, a hub id "
                           f"(org/name) or an alias ({', '.join(MODELS.names())})")
    elif "/" in name:
        bundle = _load_hub(name, dt)
    else:
        raise UnknownNameError("model", name, MODELS.names())
    bundle.model.to(dev)
    if freeze_vision_tower:
        freeze_tower(bundle.model)
    return bundle


def _looks_local(name: str) -> bool:
    """A path rather than a hub id ('org/name'): absolute, relative with ./ ../ ~, or deeper."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def model_folder(path: Path) -> Path:
    """The folder holding config.json: `path` itself, a duotune checkpoint's `model/`, or the newest
    checkpoint of a duotune run folder; a DuotuneError naming `path` otherwise."""
    if (path / "config.json").is_file():
        return path
    if (path / "model" / "config.json").is_file():
        return path / "model"
    numbered = [p for p in path.glob("checkpoint-*") if p.name[len("checkpoint-"):].isdigit()
                and (p / "model" / "config.json").is_file()]
    if numbered:
        return max(numbered, key=lambda p: int(p.name[len("checkpoint-"):])) / "model"
    raise DuotuneError(f"{path} is not a model folder: it has no config.json; give a transformers "
                       "checkpoint (config.json + weights), a duotune checkpoint-N folder or run folder, "
                       "a hub id or an alias")


def _load_local(path: Path, dtype: torch.dtype, name: str) -> ModelBundle:
    from safetensors import SafetensorError

    try:
        return load_folder(path, dtype=dtype, name=name)
    except (OSError, ValueError, SafetensorError) as err:
        raise DuotuneError(f"{path} could not be loaded as a model ({err.__class__.__name__}: "
                           f"{str(err).splitlines()[0][:300]}); check its config.json and weight files"
                           ) from None


def _load_hub(name: str, dtype: torch.dtype) -> ModelBundle:
    try:
        return load_folder(name, dtype=dtype, name=name)
    except OSError as err:
        raise DuotuneError(
            f"model {name!r} is not a registered alias, not a local folder, and could not be loaded "
            f"from the hub ({err.__class__.__name__}: {str(err).splitlines()[0]}); aliases: "
            f"{', '.join(MODELS.names())}") from None


def load_folder(path: str | Path, *, dtype: torch.dtype, name: str) -> ModelBundle:
    """Load a transformers checkpoint (folder or hub id) as a text LM or, if its config has a
    `vision_config`, as an image-text-to-text model with its processor."""
    config = AutoConfig.from_pretrained(path)
    is_vlm = hasattr(config, "vision_config")
    auto = AutoModelForImageTextToText if is_vlm else AutoModelForCausalLM
    model = auto.from_pretrained(path, dtype=dtype)
    processor: Any | None = None
    if is_vlm:
        processor = _load_processor(path, config.model_type)
        tokenizer = processor.tokenizer
    else:
        tokenizer = AutoTokenizer.from_pretrained(path)
    _ensure_pad_token(tokenizer, model)
    return ModelBundle(model=model.eval(), tokenizer=tokenizer, processor=processor, is_vlm=is_vlm,
                       name=name)


def _load_processor(path: str | Path, model_type: str) -> Any:
    """The checkpoint's processor; Qwen-VL folders get the image-only variant (no torchvision)."""
    image_only = IMAGE_ONLY_PROCESSORS.get(model_type)
    return image_only.from_pretrained(path) if image_only else AutoProcessor.from_pretrained(path)


def _ensure_pad_token(tokenizer: Any, model: Any) -> None:
    """Padding needs an id; reuse EOS (masked out by the attention mask) when the checkpoint has none."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.generation_config, "pad_token_id", None) is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id

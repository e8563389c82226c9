"""The `ModelBundle` record (model + tokenizer + processor), the `model` alias registry, saving, and
vision-tower freezing.

Imports torch, transformers and duotune's errors/registry only; never trainers, rollout or algos.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from duotune.errors import ConfigError
from duotune.registry import Registry

# alias -> builder(dtype) -> ModelBundle on CPU; `load_model` then moves it and freezes what is asked.
MODELS: Registry[Callable[[torch.dtype], ModelBundle]] = Registry("model")

# Config attributes naming tokens that stand in for images/videos or delimit them. The model must
# never emit them: an image placeholder in a completion makes the next forward fail with
# "Image features and image tokens do not match" (issue 7), so samplers pass these as suppress_tokens.
_VISION_TOKEN_ATTRS = ("image_token_id", "image_token_index", "video_token_id",
                       "vision_start_token_id", "vision_end_token_id")
# Module-name parts of vision encoders, and of the projectors that stay trainable when the tower
# is frozen (Qwen2-VL's `visual.merger` lives inside `visual`; LLaVA's projector sits beside it).
_TOWER_PARTS = ("visual", "vision_tower", "vision_model", "vision_encoder")
_PROJECTOR_PARTS = ("merger", "multi_modal_projector", "mm_projector", "connector")


@dataclass
class ModelBundle:
    """A loaded policy: the model, its tokenizer, its processor (None for text models)."""

    model: Any
    tokenizer: Any
    processor: Any | None
    is_vlm: bool
    name: str

    @property
    def pad_id(self) -> int:
        """Padding token id (the tokenizer's pad token; loaders always set one)."""
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else self.eos_ids[0]

    @property
    def eos_ids(self) -> list[int]:
        """Stop-token ids: the generation config's EOS (may be several), else the tokenizer's."""
        gen = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        eos = gen if gen is not None else self.tokenizer.eos_token_id
        ids = eos if isinstance(eos, (list, tuple)) else [eos]
        return [int(i) for i in ids if i is not None]

    @property
    def vision_token_ids(self) -> list[int]:
        """Image/video placeholder and delimiter ids to pass as `suppress_tokens` when sampling.

        Empty for text models.
        """
        if not self.is_vlm:
            return []
        cfg = self.model.config
        ids = {int(v) for a in _VISION_TOKEN_ATTRS if isinstance(v := getattr(cfg, a, None), int)}
        vocab = len(self.tokenizer)
        return sorted(i for i in ids if 0 <= i < max(vocab, cfg.get_text_config().vocab_size))


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """fp32 on CPU and bf16 on CUDA unless given; strings like 'bf16', 'bfloat16', 'float32'."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if dtype not in names:
        raise ConfigError(f"unknown model dtype {dtype!r}; valid: {', '.join(sorted(names))}")
    return names[dtype]


def resolve_device(device: torch.device | str | None) -> torch.device:
    """The given device, else CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def freeze_vision_tower(model: Any) -> int:
    """Freeze the vision encoder's parameters (not the projector); returns how many tensors froze.

    Raises ConfigError for a model without a recognisable vision tower (e.g. a text model).
    """
    frozen = 0
    for name, param in model.named_parameters():
        parts = name.split(".")
        if any(p in _TOWER_PARTS for p in parts) and not any(p in _PROJECTOR_PARTS for p in parts):
            param.requires_grad_(False)
            frozen += 1
    if frozen == 0:
        raise ConfigError(f"freeze_vision_tower: {type(model).__name__} has no vision tower "
                          f"(no parameter under {', '.join(_TOWER_PARTS)}); set it to false for text models")
    return frozen


def vision_modules(model: Any) -> list[Any]:
    """The outermost vision tower and projector modules of a VLM (empty for a text model): the
    modules `get_image_features` runs, which `generate` calls outside the model's own forward."""
    found: list[tuple[str, Any]] = []
    for name, module in model.named_modules():
        if name.split(".")[-1] in _TOWER_PARTS + _PROJECTOR_PARTS and not any(
                name.startswith(f"{outer}.") for outer, _ in found):
            found.append((name, module))
    return [m for _, m in found]


def strip_gguf_quantizer(model: Any) -> None:
    """Forget that `model` was loaded from a GGUF file (its weights are already dequantised).

    `save_pretrained` refuses a model whose `hf_quantizer` is set, and a saved
    `quantization_config` would make the next load look for the GGUF file again.
    """
    qcfg = getattr(model.config, "quantization_config", None)
    method = qcfg.get("quant_method") if isinstance(qcfg, dict) else getattr(qcfg, "quant_method", None)
    if qcfg is not None and str(getattr(method, "value", method)) == "gguf":
        model.hf_quantizer = None
        del model.config.quantization_config
        if hasattr(model, "is_quantized"):
            model.is_quantized = False


def save_model(bundle: ModelBundle, path: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the model (safetensors) and its processor or tokenizer into the folder `path`.

    `load_model(path)` loads it back; a LoRA (peft) model is written with its adapters merged.
    `state_dict`: the weights to write instead of the module's own (the consolidated weights of a
    model sharded over ranks, gathered by the trainer). Writes in place: a caller that needs
    atomicity writes to a temporary folder and renames it (the trainer does).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model = bundle.model
    from duotune.models.lora import is_peft, merged_copy

    if is_peft(model):  # LoRA: write the merged model, loadable without peft
        model = merged_copy(model)
    strip_gguf_quantizer(model)
    model.save_pretrained(path, safe_serialization=True, state_dict=state_dict)
    (bundle.processor if bundle.processor is not None else bundle.tokenizer).save_pretrained(path)
    return path

"""LoRA on the language model via `peft`, with whole modules (a VLM's vision tower and projector)
trained in full beside it, each group at its own learning rate.

`apply_lora(model, ...)` wraps the model in a `PeftModel` whose trainable parameters are the LoRA
matrices plus every parameter under `full_modules`; `merged_copy(model)` is the plain transformers
model with the adapters folded in (what `save_model` writes, so any checkpoint loads with
`load_model`), `merged_weights(model)` the same tensors streamed without a copy (vLLM weight
sync); `trainable_state` / `load_trainable_state` carry exactly the trained tensors, so a resumed run rebuilds the same parametrisation instead of restarting the adapters from zero.
Imports torch and peft (lazily); never trainers or rollout.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from duotune.errors import ConfigError

# Linear layers of Llama/Qwen/Mistral-style decoders that LoRA adapts by default.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def is_peft(model: Any) -> bool:
    return hasattr(model, "get_base_model") and hasattr(model, "peft_config")


def _under(name: str, prefixes: Sequence[str]) -> bool:
    """True when the dotted `name` has one of `prefixes` as a path component (e.g. 'vision_tower')."""
    parts = name.split(".")
    return any(p in parts for p in prefixes)


def apply_lora(model: Any, *, r: int, alpha: float, dropout: float, targets: Sequence[str],
               full_modules: Sequence[str]) -> Any:
    """Wrap `model` with LoRA adapters on its language model's `targets` linears (layers under a
    `full_modules` component, e.g. the vision tower, are not adapted) and unfreeze `full_modules`.

    Raises ConfigError naming what is missing when no target layer or no full module is found.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:  # pragma: no cover - peft is a dependency; a broken env says so
        raise ConfigError("lora needs the `peft` package: pip install peft") from e
    names = [n for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in targets and not _under(n, full_modules)]
    if not names:
        raise ConfigError(f"lora.target_modules {list(targets)} match no linear layer of "
                          f"{type(model).__name__} outside {list(full_modules)}")
    missing = [m for m in full_modules if not any(_under(n, [m]) for n, _ in model.named_parameters())]
    if missing:
        raise ConfigError(f"lora.full_modules {missing} name no module of {type(model).__name__}; "
                          "use [] for a text model, or e.g. [vision_tower, multi_modal_projector]")
    wrapped = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                                               target_modules=names, bias="none"))
    for name, p in wrapped.named_parameters():
        if _under(name, full_modules):
            p.requires_grad_(True)
    return wrapped


def param_groups(model: Any, lr: float, full_lr: float | None, full_modules: Sequence[str]
                 ) -> list[dict[str, Any]]:
    """AdamW groups: the adapters at `lr`, the fully trained modules at `full_lr` (default `lr`)."""
    lora, full = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (full if _under(name, full_modules) else lora).append(p)
    groups = [{"params": lora, "lr": lr}]
    if full:
        groups.append({"params": full, "lr": full_lr if full_lr is not None else lr})
    return groups


def merged_copy(model: Any) -> Any:
    """A plain transformers model equal to `model` with its adapters folded into the weights."""
    return copy.deepcopy(model).merge_and_unload()


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """The trained tensors (adapters + fully trained modules), by parameter name."""
    return {n: p.detach().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_trainable_state(model: Any, path: str | Path) -> None:
    from safetensors.torch import save_file

    save_file(trainable_state(model), str(path))


def load_trainable_state(model: Any, path: str | Path) -> None:
    """Copy the tensors saved by `save_trainable_state` into `model` (same LoRA config)."""
    from safetensors.torch import load_file

    saved = load_file(str(path))
    params = dict(model.named_parameters())
    unknown = sorted(set(saved) - set(params))
    if unknown:
        raise ConfigError(f"{path}: {len(unknown)} saved tensors are not parameters of this model "
                          f"(first: {unknown[0]}); was the run started with another lora config?")
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)


def merged_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs of `model` with its adapters folded in, named as the plain transformers
    model (what `merged_copy(model).state_dict()` holds), computed one layer at a time without
    copying or modifying the model: W + scale * B @ A for each adapted layer (peft's
    `get_delta_weight`, the term `merge_and_unload` adds), every other tensor as it is. What an
    inference engine (vLLM) loads after each optimizer step of a LoRA run."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    adapted = {name: mod for name, mod in base.named_modules() if isinstance(mod, LoraLayer)}
    with torch.no_grad():
        for name, tensor in base.state_dict().items():
            if ".lora_" in name:
                continue
            module, _, leaf = name.rpartition(".base_layer.")
            if not module:
                yield name, tensor.detach()
                continue
            layer = adapted[module]
            if leaf == "weight":
                for adapter in layer.active_adapters:
                    if adapter in layer.lora_A and adapter not in layer.merged_adapters:
                        tensor = tensor + layer.get_delta_weight(adapter).to(tensor.dtype)
            yield f"{module}.{leaf}", tensor.detach()

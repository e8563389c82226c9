"""Per-token log-probs and entropies of given sequences, in micro-batches, with the LM head applied
only where the loss mask is set (response tokens), so a [N, L, V] logits tensor never exists.

Imports torch, accelerate (to unwrap DDP/DeepSpeed), `duotune.algos` (entropy) and
`duotune.models.batching`; never trainers or rollout.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from duotune.algos import entropy_from_logits
from duotune.errors import ConfigError, ShapeError
from duotune.models.batching import ExtraInputs, MicroBatch, image_token_id, plan_micro_batches


def compute_logprobs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     loss_mask: torch.Tensor, *, extra_inputs: dict[str, Any] | None = None,
                     token_budget: int = 8192, with_entropy: bool = True, entropy_grad: bool = True,
                     temperature: float = 1.0, extra_ids: torch.Tensor | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(input_ids[i, t] | input_ids[i, :t]) and the next-token entropy where loss_mask is 1.

    Returns fp32 (logp [N, L], entropy [N, L] or None), zero where loss_mask is 0; differentiable.
    Rows run in micro-batches of at most `token_budget` tokens (rows x trimmed width); rows with
    no loss token are skipped. Logits are divided by `temperature` first (the sampling
    distribution). Position ids follow the attention mask (as `generate` does), so left padding
    and micro-batch trimming change nothing. `extra_inputs` (pixel_values, image_grid_thw,
    mm_token_type_ids, ...) are split per micro-batch; see `ExtraInputs` for the image order rule.
    Works on a bare transformers model and through DDP/PEFT wrappers (the full forward runs).
    entropy_grad False computes the entropy outside autograd (a metric or a stop-gradient weight):
    no [K, V] graph is kept for it, which is most of the head's cost on a large vocabulary.
    extra_ids [N, L, k]: more token ids whose log-probs are read at each position (a teacher's top-k
    for distillation); logp is then [N, L, 1 + k], column 0 the input token's.
    """
    _check(input_ids, attention_mask, loss_mask, token_budget, temperature)
    n, length = input_ids.shape
    inner = unwrap_model(model)
    extra = dict(extra_inputs or {})
    _add_mm_token_types(inner, input_ids, extra)
    extras = ExtraInputs(inner.config, input_ids, extra)
    rope = getattr(inner.config.get_text_config(), "rope_parameters", None) or {}
    mrope = "mrope_section" in rope
    flat, lps, ents = [], [], []
    for mb in plan_micro_batches(attention_mask, loss_mask.bool().any(1), token_budget):
        idx, logits, targets = _head_logits(model, inner, mb, input_ids, attention_mask, loss_mask,
                                            extras.take(mb.rows, mb.start, mb.stop), mrope)
        more = None if extra_ids is None else extra_ids.view(n * length, -1)[idx]
        lp, ent = _head_stats(logits, targets, with_entropy, entropy_grad, temperature, more)
        flat.append(idx)
        lps.append(lp)
        ents.append(ent)
    index = torch.cat(flat) if flat else torch.zeros(0, dtype=torch.long, device=input_ids.device)

    def assemble(values: list[torch.Tensor], *width: int) -> torch.Tensor:
        out = torch.zeros(n * length, *width, dtype=torch.float32, device=input_ids.device)
        return (out.index_put((index,), torch.cat(values)) if values else out).view(n, length, *width)

    wide = () if extra_ids is None else (1 + extra_ids.shape[-1],)
    return assemble(lps, *wide), (assemble(ents) if with_entropy else None)


@torch.no_grad()
def topk_logprobs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor,
                  k: int, *, extra_inputs: dict[str, Any] | None = None, token_budget: int = 8192,
                  temperature: float = 1.0, vocab_limit: int | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """No-grad (log p(input token) [N, L], top-k ids [N, L, k], their log-probs [N, L, k]) where
    loss_mask is 1 (a teacher's view of a student's rows); zero elsewhere. `vocab_limit`: only the
    first ids are candidates (a student whose output layer is narrower than the teacher's)."""
    _check(input_ids, attention_mask, loss_mask, token_budget, temperature)
    n, length = input_ids.shape
    inner = unwrap_model(model)
    extra = dict(extra_inputs or {})
    _add_mm_token_types(inner, input_ids, extra)
    extras = ExtraInputs(inner.config, input_ids, extra)
    mrope = "mrope_section" in (getattr(inner.config.get_text_config(), "rope_parameters", None) or {})
    dev = input_ids.device
    logp = torch.zeros(n * length, device=dev)
    top_ids = torch.zeros(n * length, k, dtype=torch.long, device=dev)
    top_lp = torch.zeros(n * length, k, device=dev)
    for mb in plan_micro_batches(attention_mask, loss_mask.bool().any(1), token_budget):
        idx, logits, targets = _head_logits(model, inner, mb, input_ids, attention_mask, loss_mask,
                                            extras.take(mb.rows, mb.start, mb.stop), mrope)
        full = torch.log_softmax(logits / temperature, dim=-1)
        logp[idx] = full.gather(-1, targets[:, None]).squeeze(-1)
        top = full[:, :vocab_limit].topk(k, dim=-1)
        top_ids[idx], top_lp[idx] = top.indices, top.values
    return logp.view(n, length), top_ids.view(n, length, k), top_lp.view(n, length, k)


def _head_logits(model: Any, inner: Any, mb: MicroBatch, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 loss_mask: torch.Tensor, extra: dict[str, Any], mrope: bool,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One micro-batch: backbone forward, then the LM head on the K hidden states that predict each
    loss position t. Returns (flat indices into [N*L], fp32 logits [K, V], the K target ids)."""
    rows = mb.rows.to(input_ids.device)
    ids = input_ids[rows, mb.start:mb.stop]
    am = attention_mask[rows, mb.start:mb.stop]
    r, t = loss_mask[rows, mb.start:mb.stop][:, 1:].bool().nonzero(as_tuple=True)
    t = t + 1
    # The token before t is the last attended one before it: t-1, unless padding sits in between.
    cols = torch.arange(am.shape[1], device=am.device).expand_as(am)
    src = torch.where(am.bool(), cols, -1).cummax(-1).values[r, t - 1]
    kwargs: dict[str, Any] = dict(input_ids=ids, attention_mask=am, use_cache=False, **extra)
    if not mrope:  # M-RoPE models derive 3-D positions from the mask and image grids themselves
        kwargs["position_ids"] = (am.long().cumsum(-1) - 1).clamp(min=0)

    def pick_positions(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0][r, src].unsqueeze(0),) + tuple(args[1:])

    # A pre-hook swaps the head's input [n, w, H] for the K needed hidden states [1, K, H]; the
    # model's own forward still runs end to end (wrappers, logit scaling, DDP hooks all apply).
    handle = inner.get_output_embeddings().register_forward_pre_hook(pick_positions)
    try:
        logits = model(**kwargs).logits[0].float()
    finally:
        handle.remove()
    return rows[r] * input_ids.shape[1] + mb.start + t, logits, ids[r, t]


def _head_stats(logits: torch.Tensor, targets: torch.Tensor, with_entropy: bool, entropy_grad: bool,
                temperature: float, extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(target) [K] and entropy [K] | None of logits [K, V] divided by `temperature`; with
    `extra` ids [K, k] logp is [K, 1 + k] (the target's, then the extra ids')."""
    if temperature != 1.0:
        logits = logits / temperature
    # log p(target) = target logit - logsumexp: no [K, V] log-softmax kept for backward.
    lse = torch.logsumexp(logits, dim=-1)
    if extra is None:
        logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
    else:
        logp = logits.gather(-1, torch.cat([targets.unsqueeze(-1), extra], -1)) - lse.unsqueeze(-1)
    # H = -sum_v p_v log p_v of the (tempered) next-token distribution (SPEC's H[i, t]).
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = entropy_from_logits(logits)
    return logp, entropy


def shared_prompt_logprobs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           resp_pos: torch.Tensor, response_mask: torch.Tensor, prompt_index: torch.Tensor, *,
                           with_entropy: bool = True, entropy_grad: bool = True, temperature: float = 1.0,
                           extra_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Response log-probs and entropies [N, T] of right-padded prompt + response rows (as `collate`
    makes them) whose rows share prompts (`prompt_index` equal): each distinct prompt runs through
    the model once, its KV cache is gathered to its rows, and only the response tokens run per row.

    The values equal `compute_logprobs` on the full rows (gathered at `resp_pos`), and gradients
    reach the prompt's activations through the cache, so a GRPO group of G rows costs one prompt
    forward instead of G. Text models only (a VLM merges image features inside its prompt forward).
    extra_ids [N, T, k] (response-aligned): logp is [N, T, 1 + k] as in `compute_logprobs`.
    """
    device = input_ids.device
    inner = unwrap_model(model)
    mask = response_mask.bool()
    n, t_len = mask.shape
    plen = attention_mask.long().sum(-1) - mask.long().sum(-1)  # prompt length of each row
    uniq, row_u = torch.unique(prompt_index.to(device), return_inverse=True)
    first = torch.full((len(uniq),), n, dtype=torch.long, device=device).scatter_reduce(
        0, row_u, torch.arange(n, device=device), reduce="amin")
    p_len = plen[first]
    width = int(p_len.max())
    # The distinct prompts, left padded (as `generate` lays them out) so every one ends at width - 1.
    cols = torch.arange(width, device=device)
    src = (cols[None, :] - (width - p_len)[:, None])
    p_mask = (src >= 0).long()
    p_ids = input_ids[first[:, None], src.clamp(min=0)] * p_mask
    p_pos = (p_mask.cumsum(-1) - 1).clamp(min=0)
    cache_kw = cache_kwarg(inner)

    def pick(select: Callable[[torch.Tensor], torch.Tensor]) -> Any:
        return inner.get_output_embeddings().register_forward_pre_hook(
            lambda _m, args: (select(args[0]).unsqueeze(0),) + tuple(args[1:]))

    handle = pick(lambda h: h[:, -1])  # the last prompt position predicts response token 0
    try:
        out = model(input_ids=p_ids, attention_mask=p_mask, position_ids=p_pos, use_cache=True)
    finally:
        handle.remove()
    first_logits = out.logits[0].float()
    cache = output_cache(out)
    cache.batch_select_indices(row_u)
    # Response tokens of every row after its prompt's cache; position t-1 predicts token t.
    r_ids = input_ids.gather(1, resp_pos) * mask.long()
    r, t = mask[:, 1:].nonzero(as_tuple=True)
    handle = pick(lambda h: h[r, t])
    try:
        logits = model(input_ids=r_ids, attention_mask=torch.cat([p_mask[row_u], mask.long()], 1),
                       position_ids=plen[:, None] + torch.arange(t_len, device=device)[None, :],
                       use_cache=True, **{cache_kw: cache}).logits[0].float()
    finally:
        handle.remove()
    lp_rest, h_rest = _head_stats(logits, r_ids[r, t + 1], with_entropy, entropy_grad, temperature,
                                  None if extra_ids is None else extra_ids[r, t + 1])
    # Token 0 is predicted by its prompt's last position: that prompt's logits, read per row.
    rows0 = mask[:, 0].nonzero(as_tuple=True)[0]
    lp0, h0 = _head_stats(first_logits[row_u[rows0]], r_ids[rows0, 0], with_entropy, entropy_grad, temperature,
                          None if extra_ids is None else extra_ids[rows0, 0])
    at0 = (rows0, torch.zeros_like(rows0))

    def place(first: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
        out = torch.zeros((n, t_len, *first.shape[1:]), dtype=torch.float32, device=device)
        return out.index_put(at0, first).index_put((r, t + 1), rest)

    return place(lp0, lp_rest), (place(h0, h_rest) if with_entropy else None)


def unwrap_model(model: Any) -> Any:
    """The transformers model inside DDP / DeepSpeed and PEFT wrappers (for its config and LM head);
    an FSDP2 module is the model itself."""
    from accelerate.utils import extract_model_from_parallel

    model = extract_model_from_parallel(model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _add_mm_token_types(inner: Any, input_ids: torch.Tensor, extra: dict[str, Any]) -> None:
    """Qwen-VL's M-RoPE needs `mm_token_type_ids` (1 at image tokens); derive it when not given."""
    if "mm_token_type_ids" in extra or "image_grid_thw" not in extra:
        return
    if "mm_token_type_ids" not in inspect.signature(inner.forward).parameters:
        return
    extra["mm_token_type_ids"] = (input_ids == image_token_id(inner.config)).long()


def _check(input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor,
           token_budget: int, temperature: float) -> None:
    if input_ids.dim() != 2:
        raise ShapeError(f"input_ids must be [N, L]; got shape {tuple(input_ids.shape)}")
    for name, mask in (("attention_mask", attention_mask), ("loss_mask", loss_mask)):
        if mask.shape != input_ids.shape:
            raise ShapeError(f"{name} must have the shape of input_ids {tuple(input_ids.shape)}; "
                             f"got {tuple(mask.shape)}")
    first_real = attention_mask.bool() & (attention_mask.long().cumsum(-1) == 1)
    if (loss_mask.bool() & first_real).any():
        raise ShapeError("loss_mask is 1 at a row's first real token, which has no context to predict "
                         "it from; mask the prompt (at least its first token)")
    if (loss_mask.bool() & ~attention_mask.bool()).any():
        raise ShapeError("loss_mask is 1 where attention_mask is 0; score only real (unpadded) tokens")
    if token_budget < 1:
        raise ConfigError(f"token_budget must be >= 1 (got {token_budget})")
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0 (got {temperature})")


def cache_kwarg(model: Any) -> str:
    """The name a model's forward (and `generate`) takes its KV cache by: `cache` in transformers 5,
    `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(unwrap_model(model).forward).parameters else "past_key_values"


def output_cache(out: Any) -> Any:
    """The KV cache of a forward's output under either transformers naming (see `cache_kwarg`)."""
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values

"""compute_logprobs: equals a naive full-logits log_softmax gather, micro-batching changes neither
values nor gradients, the LM head sees only loss positions, images split per micro-batch."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from duotune.errors import ShapeError
from duotune.models import compute_logprobs, load_model
from duotune.models.batching import plan_micro_batches


def padded_batch(prompts: list[int], responses: list[int], vocab: int = 264, seed: int = 0):
    """Left-padded prompts + right-padded responses (the rollout layout); loss on responses."""
    g = torch.Generator().manual_seed(seed)
    p_max, r_max = max(prompts), max(responses)
    n = len(prompts)
    ids = torch.randint(8, vocab, (n, p_max + r_max), generator=g)
    attn = torch.zeros_like(ids)
    loss = torch.zeros_like(ids)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        attn[i, p_max - p:p_max + r] = 1
        loss[i, p_max:p_max + r] = 1
    return ids * attn, attn, loss


def naive(model, ids, attn, loss, temperature=1.0, **extra):
    """Full [N, L, V] logits, log_softmax, gather; entropy by an explicit softmax sum."""
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    kw = {} if "image_grid_thw" in extra else {"position_ids": pos}
    logits = model(input_ids=ids, attention_mask=attn, **kw, **extra).logits.float() / temperature
    logp_all = logits[:, :-1].log_softmax(-1)
    p = logits[:, :-1].softmax(-1)
    logp = torch.zeros(ids.shape)
    ent = torch.zeros(ids.shape)
    logp[:, 1:] = logp_all.gather(-1, ids[:, 1:, None]).squeeze(-1)
    ent[:, 1:] = -(p * p.log()).sum(-1)
    return logp * loss, ent * loss


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-llm")


def test_matches_naive_values_and_entropy(tiny):
    ids, attn, loss = padded_batch([3, 7, 5, 1], [4, 2, 6, 5])
    with torch.no_grad():
        logp, ent = compute_logprobs(tiny.model, ids, attn, loss)
        ref_logp, ref_ent = naive(tiny.model, ids, attn, loss)
    assert logp.dtype == torch.float32 and logp.shape == ids.shape
    assert torch.allclose(logp, ref_logp, atol=1e-5) and torch.allclose(ent, ref_ent, atol=1e-5)
    assert (logp[loss == 0] == 0).all() and (ent[loss == 0] == 0).all()
    assert (logp[loss == 1] < 0).all() and (ent[loss == 1] > 0).all()
    # Entropy never exceeds log|V| (uniform distribution over the 264 ids).
    assert ent.max() <= torch.log(torch.tensor(264.0))


def test_temperature_scales_logits_and_entropy_is_optional(tiny):
    ids, attn, loss = padded_batch([4, 2], [3, 5], seed=1)
    with torch.no_grad():
        logp, ent = compute_logprobs(tiny.model, ids, attn, loss, temperature=0.7, with_entropy=False)
        ref, _ = naive(tiny.model, ids, attn, loss, temperature=0.7)
    assert ent is None and torch.allclose(logp, ref, atol=1e-5)


def test_micro_batches_give_same_values_and_gradients(tiny):
    ids, attn, loss = padded_batch([3, 7, 5, 1, 6], [4, 2, 6, 5, 3], seed=2)
    model = tiny.model

    def run(budget):
        model.zero_grad()
        logp, ent = compute_logprobs(model, ids, attn, loss, token_budget=budget)
        (logp.sum() + 0.1 * ent.sum()).backward()
        return logp.detach(), ent.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    one = run(10_000)
    several = run(12)  # rows of 5-10 tokens: one per micro-batch
    assert len(plan_micro_batches(attn, loss.bool().any(1), 12)) == 5
    assert torch.allclose(one[0], several[0], atol=1e-5) and torch.allclose(one[1], several[1], atol=1e-5)
    assert all(torch.allclose(g, several[2][n], atol=1e-5) for n, g in one[2].items())
    assert any(g.abs().sum() > 0 for g in one[2].values())


def test_lm_head_runs_only_at_loss_positions(tiny):
    ids, attn, loss = padded_batch([3, 7, 5], [4, 2, 6], seed=3)
    loss[1] = 0  # a row with nothing to score is not run at all
    seen = []
    handle = tiny.model.get_output_embeddings().register_forward_hook(
        lambda _m, args, _out: seen.append(args[0].shape[:-1].numel()))
    try:
        with torch.no_grad():
            logp, _ = compute_logprobs(tiny.model, ids, attn, loss, token_budget=12)
    finally:
        handle.remove()
    assert seen == [6, 4]  # one call per micro-batch, 6 + 4 response tokens, never N x L x V
    assert (logp[1] == 0).all()


def test_plan_trims_shared_padding_and_respects_budget():
    # Row spans (first..last real column): row0 2..5 (4), row1 0..5 (6), row2 3..4 (2).
    attn = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0]])
    plans = plan_micro_batches(attn, torch.ones(3, dtype=torch.bool), token_budget=8)
    # Longest first: row1 alone (6; adding row0 would be 2 x 6 = 12 > 8), then rows 0+2 share
    # columns 2..5: 2 rows x 4 = 8 tokens.
    assert [(p.rows.tolist(), p.start, p.stop) for p in plans] == [([1], 0, 6), ([0, 2], 2, 6)]
    # Two 4-token rows at different offsets span 7 columns together: 2 x 7 = 14 > 8, so apart.
    shifted = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1]])
    plans = plan_micro_batches(shifted, torch.ones(2, dtype=torch.bool), token_budget=8)
    assert [(p.rows.tolist(), p.start, p.stop) for p in plans] == [([1], 3, 7), ([0], 0, 4)]


def test_padding_inside_a_row_changes_nothing(tiny):
    # Positions follow the attention mask (as in `generate`), so a prompt | pad | response row
    # scores exactly like the same tokens without the gap.
    ids, attn, loss = padded_batch([4], [3], seed=5)
    gap_ids = torch.cat([ids[:, :4], torch.zeros(1, 2, dtype=torch.long), ids[:, 4:]], 1)
    gap_attn = torch.cat([attn[:, :4], torch.zeros(1, 2, dtype=torch.long), attn[:, 4:]], 1)
    gap_loss = torch.cat([loss[:, :4], torch.zeros(1, 2, dtype=torch.long), loss[:, 4:]], 1)
    with torch.no_grad():
        plain, _ = compute_logprobs(tiny.model, ids, attn, loss)
        gapped, _ = compute_logprobs(tiny.model, gap_ids, gap_attn, gap_loss)
    assert torch.allclose(gapped[:, 6:], plain[:, 4:], atol=1e-5) and (gapped[:, :6] == 0).all()


def test_bad_shapes_and_masks_name_the_argument(tiny):
    ids, attn, loss = padded_batch([3, 2], [2, 2])
    with pytest.raises(ShapeError, match="loss_mask must have the shape of input_ids"):
        compute_logprobs(tiny.model, ids, attn, loss[:, :-1])
    bad = loss.clone()
    bad[1, 1] = 1  # row 1's prompt has 2 tokens, padded on the left: column 1 is its first
    with pytest.raises(ShapeError, match="first real token, which has no context"):
        compute_logprobs(tiny.model, ids, attn, bad)
    bad = loss.clone()
    bad[0, 1] = 1  # a padding column of row 0 (its prompt has 3 tokens: columns 0-2 are real)
    attn2 = attn.clone()
    attn2[0, 1] = 0
    with pytest.raises(ShapeError, match="loss_mask is 1 where attention_mask is 0"):
        compute_logprobs(tiny.model, ids, attn2, bad)


def vlm_batch(bundle, image_counts):
    """Rows with different numbers of images; each row answers with 3 random tokens."""
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (90, 90, 0)]
    sizes = [(80, 60), (56, 112), (64, 64), (100, 50)]
    texts, images = [], []
    for i, k in enumerate(image_counts):
        parts = [{"type": "image"}] * k + [{"type": "text", "text": f"row {i}"}]
        texts.append(bundle.processor.apply_chat_template([{"role": "user", "content": parts}],
                                                           tokenize=False, add_generation_prompt=True))
        images += [Image.new("RGB", sizes[(i + j) % 4], colours[(i + j) % 4]) for j in range(k)]
    bundle.tokenizer.padding_side = "left"
    enc = bundle.processor(text=texts, images=images, return_tensors="pt", padding=True)
    n, p = enc["input_ids"].shape
    resp = torch.randint(8, 200, (n, 3), generator=torch.Generator().manual_seed(4))
    ids = torch.cat([enc["input_ids"], resp], 1)
    attn = torch.cat([enc["attention_mask"], torch.ones(n, 3, dtype=torch.long)], 1)
    loss = torch.zeros_like(ids)
    loss[:, p:] = 1
    pixels = {k: v for k, v in enc.items() if k in ("pixel_values", "image_grid_thw")}
    return ids, attn, loss, pixels


@pytest.mark.parametrize("name", ["tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-llava"])
def test_vlm_images_split_per_micro_batch(name):
    bundle = load_model(name)
    ids, attn, loss, pixels = vlm_batch(bundle, [1, 2, 0, 1])
    with torch.no_grad():
        whole, _ = compute_logprobs(bundle.model, ids, attn, loss, extra_inputs=pixels)
        split, _ = compute_logprobs(bundle.model, ids, attn, loss, extra_inputs=pixels, token_budget=1)
        extra = dict(pixels)
        if "image_grid_thw" in pixels:  # M-RoPE needs the per-token modality ids (1 = image)
            extra["mm_token_type_ids"] = (ids == bundle.model.config.image_token_id).long()
        ref, _ = naive(bundle.model, ids, attn, loss, **extra)
    assert torch.allclose(whole, ref, atol=1e-5) and torch.allclose(split, ref, atol=1e-5)
    # The image pixels matter: a different image changes row 0's scores.
    changed = {k: v.clone() for k, v in pixels.items()}
    changed["pixel_values"] = changed["pixel_values"] + 1.0
    with torch.no_grad():
        other, _ = compute_logprobs(bundle.model, ids, attn, loss, extra_inputs=changed)
    assert not torch.allclose(other[0], whole[0], atol=1e-4)


def test_image_count_mismatch_is_reported():
    bundle = load_model("tiny-llava")
    ids, attn, loss, pixels = vlm_batch(bundle, [1, 1])
    pixels["pixel_values"] = pixels["pixel_values"][:1]
    with pytest.raises(ShapeError, match="row 0 of input_ids has 16 image tokens but its images in order provide 32"):
        compute_logprobs(bundle.model, ids, attn, loss, extra_inputs=pixels)

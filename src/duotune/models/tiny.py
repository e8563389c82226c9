"""Tiny random-initialised test models, built offline from configs with fixed seeds.

Text: `tiny-llm` (Llama), `tiny-qwen2` (Qwen2), `tiny-qwen2-h32` (32-wide heads, for vLLM on CPU). Vision: `tiny-qwen2-vl`, `tiny-qwen2.5-vl`, `tiny-llava`.
All share a byte-level tokenizer (256 bytes + ChatML/vision specials, ~264 ids): no file or hub is
read, any text round-trips, and a small vocabulary lets a random model hit target tokens often
enough for seeded learning tests. Imports torch/transformers and `duotune.models.bundle` only.
"""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen2VLProcessor,
)

from duotune.models.bundle import MODELS, ModelBundle

SEED = 1234
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>", "<image>")
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
LLAVA_IMAGE = "<image>"
# Text backbone shared by every tiny model: 2 layers, width 64, grouped-query attention (4 q / 2 kv).
_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=False)


def chat_template(image_text: str) -> str:
    """ChatML (as SmolLM2 and Qwen use); an image content part renders as `image_text`."""
    return (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for p in m['content'] %}"
        "{% if p['type'] == 'image' %}" + image_text + "{% else %}{{ p['text'] }}{% endif %}"
        "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def byte_tokenizer(image_text: str = QWEN_IMAGE) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: ids 0-7 are the special tokens, then one id per byte."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", unk_token=None, bos_token=None)
    tok.add_special_tokens({"additional_special_tokens": list(SPECIALS)})
    tok.chat_template = chat_template(image_text)
    return tok


def _ids(tok: PreTrainedTokenizerFast) -> dict[str, int]:
    return dict(vocab_size=len(tok), bos_token_id=None, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)


def _seeded(cls: Any, config: Any, dtype: torch.dtype) -> Any:
    """Build `cls(config)` with a fixed seed, leaving the caller's RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = cls(config)
    model.generation_config.eos_token_id = config.get_text_config().eos_token_id
    model.generation_config.pad_token_id = config.get_text_config().pad_token_id
    return model.to(dtype).eval()


def _text_bundle(name: str, cfg_cls: Any, model_cls: Any, dtype: torch.dtype, **over: Any) -> ModelBundle:
    tok = byte_tokenizer()
    model = _seeded(model_cls, cfg_cls(**{**_TEXT, **over}, **_ids(tok)), dtype)
    return ModelBundle(model=model, tokenizer=tok, processor=None, is_vlm=False, name=name)


@MODELS.register("tiny-llm")
def tiny_llm(dtype: torch.dtype) -> ModelBundle:
    """Tiny random Llama (2 layers, width 64, byte tokenizer) for fast tests."""
    return _text_bundle("tiny-llm", LlamaConfig, LlamaForCausalLM, dtype)


@MODELS.register("tiny-qwen2")
def tiny_qwen2(dtype: torch.dtype) -> ModelBundle:
    """Tiny random Qwen2 (2 layers, width 64, byte tokenizer) for fast tests."""
    return _text_bundle("tiny-qwen2", Qwen2Config, Qwen2ForCausalLM, dtype)


@MODELS.register("tiny-qwen2-h32")
def tiny_qwen2_h32(dtype: torch.dtype) -> ModelBundle:
    """Tiny random Qwen2 with 2 heads of 32 (1 kv head): the narrowest heads vLLM's CPU kernels serve."""
    return _text_bundle("tiny-qwen2-h32", Qwen2Config, Qwen2ForCausalLM, dtype,
                        num_attention_heads=2, num_key_value_heads=1)


class Qwen2VLImageProcessor(Qwen2VLProcessor):
    """Qwen2-VL processor without a video processor (the stock one needs torchvision)."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None,
                 **kwargs: Any):
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                         chat_template=chat_template, **kwargs)


class Qwen2_5_VLImageProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor without a video processor (the stock one needs torchvision)."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None,
                 **kwargs: Any):
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                         chat_template=chat_template, **kwargs)


# model_type -> image-only processor class; `load_model` uses these for saved Qwen-VL folders too.
IMAGE_ONLY_PROCESSORS = {"qwen2_vl": Qwen2VLImageProcessor, "qwen2_5_vl": Qwen2_5_VLImageProcessor}


def _qwen_vl(name: str, cfg_cls: Any, model_cls: Any, vision: dict[str, Any], dtype: torch.dtype) -> ModelBundle:
    tok = byte_tokenizer(QWEN_IMAGE)
    special = {f"{k}_token_id": tok.convert_tokens_to_ids(t) for k, t in (
        ("image", "<|image_pad|>"), ("video", "<|video_pad|>"),
        ("vision_start", "<|vision_start|>"), ("vision_end", "<|vision_end|>"))}
    # M-RoPE splits each head's 8 rotary frequency pairs over (time, height, width): 2 + 3 + 3.
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    text = dict(_TEXT, rope_parameters=rope, **_ids(tok))
    config = cfg_cls(text_config=text, vision_config=vision, tie_word_embeddings=False, **special)
    model = _seeded(model_cls, config, dtype)
    # Images are resized to between 2x2 and 4x4 merged 28-px cells: 4 to 16 image tokens each.
    images = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112)
    processor = IMAGE_ONLY_PROCESSORS[config.model_type](
        image_processor=images, tokenizer=tok, chat_template=tok.chat_template)
    return ModelBundle(model=model, tokenizer=tok, processor=processor, is_vlm=True, name=name)


@MODELS.register("tiny-qwen2-vl")
def tiny_qwen2_vl(dtype: torch.dtype) -> ModelBundle:
    """Tiny random Qwen2-VL (1-layer vision tower, 2-layer LM) with an image-only processor."""
    vision = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)
    return _qwen_vl("tiny-qwen2-vl", Qwen2VLConfig, Qwen2VLForConditionalGeneration, vision, dtype)


@MODELS.register("tiny-qwen2.5-vl")
def tiny_qwen2_5_vl(dtype: torch.dtype) -> ModelBundle:
    """Tiny random Qwen2.5-VL (2-layer windowed vision tower, 2-layer LM), image-only processor."""
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                  fullatt_block_indexes=[1])
    return _qwen_vl("tiny-qwen2.5-vl", Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, vision, dtype)


def llava_processor(tok: Any, image_size: int, patch_size: int) -> LlavaProcessor:
    """A LLaVA processor for square `image_size` inputs; one `<image>` expands to (size/patch)^2 ids."""
    images = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                   crop_size={"height": image_size, "width": image_size})
    return LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=tok.chat_template, image_token=LLAVA_IMAGE)


@MODELS.register("tiny-llava")
def tiny_llava(dtype: torch.dtype) -> ModelBundle:
    """Tiny random LLaVA (2-layer CLIP tower on 56-px images, 2-layer Llama LM)."""
    tok = byte_tokenizer(LLAVA_IMAGE)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, image_size=56, patch_size=14)
    # "default" drops CLS, so each image is (56/14)^2 = 16 tokens, taken from the last layer.
    config = LlavaConfig(vision_config=vision, text_config=LlamaConfig(**_TEXT, **_ids(tok)),
                         image_token_index=tok.convert_tokens_to_ids(LLAVA_IMAGE), image_seq_length=16,
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
    model = _seeded(LlavaForConditionalGeneration, config, dtype)
    return ModelBundle(model=model, tokenizer=tok, processor=llava_processor(tok, 56, 14),
                       is_vlm=True, name="tiny-llava")

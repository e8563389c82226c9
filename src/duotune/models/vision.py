"""`smollm2-vision`: a LLaVA-style VLM whose language model is the real SmolLM2-135M-Instruct and
whose CLIP vision tower + projector are small and randomly initialised (seeded), built offline.

It needs a warm-up SFT of the tower + projector before RL (issue 7). Built once into the model
cache like the embedded model. Imports transformers and duotune.models' embedded/loading/tiny only.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from duotune.models.bundle import MODELS, ModelBundle
from duotune.models.embedded import build_cached, cached_path, is_complete, smollm2_folder
from duotune.models.loading import load_folder
from duotune.models.tiny import LLAVA_IMAGE, SEED, llava_processor

SMOLLM2_VISION = "smollm2-vision"
IMAGE_SIZE, PATCH = 112, 16  # (112 / 16)^2 = 49 image tokens per image
# A 4-layer, width-192 CLIP tower (~1.8 M parameters): small enough to train on a CPU.
VISION = dict(hidden_size=192, intermediate_size=768, num_hidden_layers=4, num_attention_heads=3,
              image_size=IMAGE_SIZE, patch_size=PATCH)

# SmolLM2's own ChatML template (same default system turn), with image parts rendered as <image>.
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for p in m['content'] %}{% if p['type'] == 'image' %}" + LLAVA_IMAGE + "{% else %}"
    "{{ p['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_smollm2_vision(source: Path, folder: Path) -> None:
    """Write the VLM into `folder`: SmolLM2 weights from `source`, a seeded random tower/projector."""
    tok = AutoTokenizer.from_pretrained(source)
    tok.add_special_tokens({"additional_special_tokens": [LLAVA_IMAGE]})
    tok.chat_template = CHAT_TEMPLATE
    lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    config = LlavaConfig(vision_config=CLIPVisionConfig(**VISION), text_config=lm.config,
                         image_token_index=tok.convert_tokens_to_ids(LLAVA_IMAGE),
                         image_seq_length=(IMAGE_SIZE // PATCH) ** 2, vision_feature_layer=-1,
                         vision_feature_select_strategy="default", tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = LlavaForConditionalGeneration(config)
        # The new <image> row starts at the mean embedding; it is replaced by image features in
        # every forward, and suppressed when sampling.
        model.model.language_model.load_state_dict(lm.model.state_dict())
        model.resize_token_embeddings(len(tok))
    model.generation_config.eos_token_id = lm.generation_config.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder, safe_serialization=True)
    llava_processor(tok, IMAGE_SIZE, PATCH).save_pretrained(folder)


@MODELS.register(SMOLLM2_VISION)
def smollm2_vision(dtype: torch.dtype) -> ModelBundle:
    """SmolLM2-135M-Instruct + a small random CLIP tower (LLaVA); warm it up with SFT before RL."""
    folder = cached_path(SMOLLM2_VISION)
    if not is_complete(folder):
        build_cached(folder, lambda tmp: build_smollm2_vision(smollm2_folder(), tmp))
    return load_folder(folder, dtype=dtype, name=SMOLLM2_VISION)

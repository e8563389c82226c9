"""duotune.models loading: tiny aliases (text + VLMs) run forward/generate, save/reload round trips,
vision-tower freezing, errors, and the embedded SmolLM2 loaded from its safetensors cache."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from duotune.errors import ConfigError, UnknownNameError
from duotune.models import MODELS, ModelBundle, freeze_vision_tower, load_model, save_model
from duotune.models.embedded import SMOLLM2, build_cached, cached_path, convert_gguf, gguf_file, is_complete

VLMS = ["tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-llava"]
TEXT = ["tiny-llm", "tiny-qwen2"]


def vlm_inputs(bundle: ModelBundle, image: Image.Image) -> dict[str, torch.Tensor]:
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]}]
    text = bundle.processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    return dict(bundle.processor(text=[text], images=[image], return_tensors="pt"))


def test_aliases_registered():
    assert {"smollm2-135m-instruct", *TEXT, *VLMS} <= set(MODELS.names())


@pytest.mark.parametrize("name,arch", [("tiny-llm", "LlamaForCausalLM"), ("tiny-qwen2", "Qwen2ForCausalLM")])
def test_tiny_text_model_forward_and_tokenizer(name, arch):
    state = torch.random.get_rng_state()
    bundle = load_model(name)
    assert torch.equal(state, torch.random.get_rng_state())  # the fixed seed leaves the caller's RNG alone
    assert type(bundle.model).__name__ == arch and not bundle.is_vlm and bundle.processor is None
    tok = bundle.tokenizer
    text = "Answer: 42 é"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode()) and tok.decode(ids) == text  # one id per UTF-8 byte
    assert (bundle.pad_id, bundle.eos_ids, bundle.vision_token_ids) == (0, [2], [])
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                     add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    logits = bundle.model(input_ids=torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), len(tok)) == (1, 13, 264)
    again = load_model(name).model.state_dict()  # deterministic weights
    assert all(torch.equal(v, again[k]) for k, v in bundle.model.state_dict().items())


# Image tokens per 80x60 image: Qwen resizes to 84x56 px = a 3x2 grid of 28-px merged cells = 6;
# LLaVA crops to 56x56 = (56/14)^2 = 16 patches (CLS dropped by the "default" strategy).
@pytest.mark.parametrize("name,n_image_tokens", [("tiny-qwen2-vl", 6), ("tiny-qwen2.5-vl", 6), ("tiny-llava", 16)])
def test_tiny_vlm_forward_and_generate(name, n_image_tokens):
    bundle = load_model(name)
    assert bundle.is_vlm and bundle.tokenizer is bundle.processor.tokenizer
    inputs = vlm_inputs(bundle, Image.new("RGB", (80, 60), (200, 30, 30)))
    image_id = bundle.model.config.image_token_id
    assert int((inputs["input_ids"] == image_id).sum()) == n_image_tokens
    assert image_id in bundle.vision_token_ids
    logits = bundle.model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], 264)
    # Suppressing image ids is what keeps the next forward valid (issue 7); force the model to
    # prefer them by biasing the head and check none is emitted.
    with torch.no_grad():
        bundle.model.get_output_embeddings().weight[bundle.vision_token_ids] += 5.0
    out = bundle.model.generate(**inputs, max_new_tokens=4, do_sample=False,
                                suppress_tokens=bundle.vision_token_ids)
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    assert len(new) == 4 and not set(new) & set(bundle.vision_token_ids)


@pytest.mark.parametrize("name", TEXT + VLMS)
def test_save_and_reload_round_trip(name, tmp_path):
    bundle = load_model(name)
    save_model(bundle, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    again = load_model(str(tmp_path / "ckpt"))
    assert (again.is_vlm, type(again.model)) == (bundle.is_vlm, type(bundle.model))
    assert type(again.processor) is type(bundle.processor)
    ids = torch.tensor([[1, 100, 101, 102, 2]])
    with torch.no_grad():
        assert torch.equal(bundle.model(input_ids=ids).logits, again.model(input_ids=ids).logits)
    if bundle.is_vlm:
        image = Image.new("RGB", (64, 64), (0, 0, 255))
        a, b = vlm_inputs(bundle, image), vlm_inputs(again, image)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_freeze_vision_tower_freezes_only_the_encoder():
    qwen = load_model("tiny-qwen2-vl", freeze_vision_tower=True)
    frozen = {n for n, p in qwen.model.named_parameters() if not p.requires_grad}
    tower = {n for n, _ in qwen.model.named_parameters() if ".visual." in f".{n}" and ".merger." not in n}
    assert frozen == tower and tower
    assert all(p.requires_grad for n, p in qwen.model.named_parameters() if ".merger." in n)
    llava = load_model("tiny-llava")
    tower = [n for n, _ in llava.model.named_parameters() if "vision_tower" in n]
    assert freeze_vision_tower(llava.model) == len(tower)
    trainable = {n.removeprefix("model.").split(".")[0] for n, p in llava.model.named_parameters()
                 if p.requires_grad}
    assert trainable == {"multi_modal_projector", "language_model", "lm_head"}
    with pytest.raises(ConfigError, match="no vision tower"):
        load_model("tiny-llm", freeze_vision_tower=True)


def test_unknown_alias_names_the_valid_ones():
    with pytest.raises(UnknownNameError) as err:
        load_model("tiny-lm")
    msg = str(err.value)
    assert "tiny-llm" in msg and "smollm2-135m-instruct" in msg and "did you mean 'tiny-llm'" in msg


def test_dtype_choice_and_bad_dtype():
    assert load_model("tiny-llm", device="cpu").model.dtype == torch.float32  # CPU default
    assert load_model("tiny-llm", dtype="bf16").model.dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="unknown model dtype 'fp8'"):
        load_model("tiny-llm", dtype="fp8")


@pytest.fixture(scope="session")
def smollm2() -> ModelBundle:
    # Reuses the shared cache ($DUOTUNE_CACHE or ~/.cache/duotune): the GGUF conversion (~20 s)
    # happens once per machine, not once per test run.
    return load_model(SMOLLM2)


def test_embedded_model_loads_from_safetensors_cache(smollm2):
    folder = cached_path(SMOLLM2)
    config = json.loads((folder / "config.json").read_text())
    assert (folder / "model.safetensors").is_file() and "quantization_config" not in config
    model = smollm2.model
    assert (type(model).__name__, model.config.num_hidden_layers, model.config.vocab_size) == \
        ("LlamaForCausalLM", 30, 49152)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # SmolLM2-135M, tied head
    assert smollm2.tokenizer.decode(smollm2.eos_ids) == "<|im_end|>" and smollm2.tokenizer.chat_template


def test_embedded_model_answers_greedily(smollm2):
    tok = smollm2.tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    out = smollm2.model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=smollm2.pad_id)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])


def test_smollm2_vision_wraps_the_real_language_model(smollm2):
    vlm = load_model("smollm2-vision")  # built once into the cache (~5 s), then ~1 s
    model, lm = vlm.model, smollm2.model
    assert type(model).__name__ == "LlavaForConditionalGeneration" and vlm.is_vlm
    # SmolLM2's weights are copied in unchanged; the only new row is the <image> token (id 49152).
    image_id = model.config.image_token_id
    assert image_id == 49152 == len(vlm.tokenizer) - 1 and vlm.vision_token_ids == [image_id]
    ours = model.model.language_model.state_dict()
    for key, value in lm.model.state_dict().items():
        assert torch.equal(ours[key][:value.shape[0]], value), key
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    ids = smollm2.tokenizer("Natalia sold 48 clips", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits[..., :49152], lm(input_ids=ids).logits, atol=1e-4)
        # A 112-px image becomes (112/16)^2 = 49 placeholder tokens, fed by the random tower.
        inputs = vlm_inputs(vlm, Image.new("RGB", (200, 150), (255, 0, 0)))
        assert int((inputs["input_ids"] == image_id).sum()) == 49
        assert torch.isfinite(model(**inputs).logits).all()
    towers = {n.split(".")[1] for n, _ in model.named_parameters() if n.startswith("model.")}
    assert towers == {"vision_tower", "multi_modal_projector", "language_model"}


def test_build_cached_is_atomic(tmp_path):
    target = tmp_path / "models" / "m"

    def crash(folder):
        (folder / "config.json").write_text("{}")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        build_cached(target, crash)
    assert not target.exists() and list(target.parent.iterdir()) == []  # no half cache, no temp left

    def write(folder):
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(b"x")

    assert build_cached(target, write) == target and is_complete(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["m"]
    assert build_cached(target, write) == target  # a concurrent finisher's copy is kept, ours dropped


@pytest.mark.slow
def test_gguf_conversion_from_scratch(tmp_path, smollm2):
    # ~20 s: dequantise the GGUF again and check the cache holds exactly those weights.
    convert_gguf(gguf_file(), tmp_path)
    fresh = load_model(str(tmp_path))
    cached = smollm2.model.state_dict()
    assert all(torch.equal(v, cached[k]) for k, v in fresh.model.state_dict().items())
    assert fresh.tokenizer("2 + 3 = 5")["input_ids"] == smollm2.tokenizer("2 + 3 = 5")["input_ids"]

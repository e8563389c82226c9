"""LoRA in the trainer: only adapters (and named full modules) train, each group at its lr; the saved
model is the merged one and loads without peft; resuming a LoRA run equals the uninterrupted run."""

import json
from pathlib import Path

import pytest
import torch

from duotune.config import load_config
from duotune.errors import ConfigError
from duotune.models import load_model
from duotune.models.lora import apply_lora
from duotune.trainers import TrainConfig, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tiny"


def _cfg(tmp_path, data_file, *extra):
    return load_config(TrainConfig, CONFIGS / "sft.yaml", [
        f"data.train={data_file}", f"run.output_dir={tmp_path}", "run.progress=false", "run.plots=false",
        "lora.enabled=true", "lora.r=4", "optim.lr=5e-2", *extra])


def _losses(run_dir):
    return [json.loads(x)["loss/total"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_lora_sft_trains_adapters_only_and_saves_merged(tmp_path, data_file):
    base = load_model("tiny-llm").model.state_dict()
    res = train(_cfg(tmp_path, data_file, "steps=8", "run.name=lora"))
    model = res.bundle.model
    losses = _losses(res.run_dir)
    assert sum(losses[-2:]) < sum(losses[:2]), losses
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # frozen base weights did not move; the adapters did (B starts at 0)
    inner = model.get_base_model().state_dict()
    assert torch.equal(inner["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
    assert torch.equal(inner["model.layers.0.self_attn.q_proj.base_layer.weight"],
                       base["model.layers.0.self_attn.q_proj.weight"])
    assert inner["model.layers.0.self_attn.q_proj.lora_B.default.weight"].abs().sum() > 0
    # the checkpoint holds the merged model: it loads without peft and computes the same logits
    saved = load_model(str(res.checkpoint / "model")).model
    assert not hasattr(saved, "peft_config")
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        assert torch.allclose(saved(input_ids=ids).logits, model.eval()(input_ids=ids).logits, atol=1e-5)
        assert not torch.allclose(saved.model.layers[0].self_attn.q_proj.weight,
                                  base["model.layers.0.self_attn.q_proj.weight"])


def test_lora_resume_matches_uninterrupted(tmp_path, data_file):
    over = ["steps=4", "optim.schedule=cosine", "run.save_every=1"]
    full = train(_cfg(tmp_path, data_file, "run.name=full", *over))
    train(_cfg(tmp_path, data_file, "run.name=cut", "run.stop_after=2", *over))
    cut = train(_cfg(tmp_path, data_file, "run.name=cut", "run.resume=auto", *over))
    assert len(_losses(cut.run_dir)) == 4
    assert _losses(cut.run_dir) == pytest.approx(_losses(full.run_dir), abs=1e-6)


def test_lora_vlm_trains_tower_and_projector_at_their_own_lr(tmp_path):
    from duotune.tasks import write_task

    data = write_task("counting", n=4, seed=0, out_dir=tmp_path / "counting", size=64)
    before = load_model("tiny-llava").model.state_dict()
    res = train(load_config(TrainConfig, CONFIGS / "sft.yaml", [
        "model=tiny-llava", f"data.train={data}", "data.prompt_style=think_answer", f"run.output_dir={tmp_path}",
        "run.progress=false", "run.plots=false", "steps=2", "lora.enabled=true", "lora.r=4",
        "lora.full_modules=[vision_tower,multi_modal_projector]", "optim.lr=1e-2", "lora.full_lr=1e-3",
        "run.keep_optimizer_state=true"]))  # the test reads the optimizer's param groups
    model = res.bundle.model
    lrs = sorted(g["lr"] for g in _optimizer_groups(res))
    assert lrs == pytest.approx([1e-3, 1e-2])
    after = model.get_base_model().state_dict()
    tower = [k for k in before if ".vision_tower." in f".{k}" and k.endswith("weight")]
    assert tower and any(not torch.equal(before[k], after[k]) for k in tower)
    proj = [k for k in before if "multi_modal_projector" in k and k.endswith("weight")]
    assert proj and any(not torch.equal(before[k], after[k]) for k in proj)
    lm_q = [k for k in after if "language_model" in k and k.endswith("q_proj.base_layer.weight")]
    assert lm_q and all(torch.equal(after[k], before[k.replace(".base_layer", "")]) for k in lm_q)
    assert not any("vision_tower" in n and "lora_" in n for n, _ in model.named_parameters())


def _optimizer_groups(res):
    from duotune.trainers.checkpoint import load_trainer_state

    state = load_trainer_state(res.checkpoint)
    return state["optimizer"]["param_groups"]


def test_lora_bad_config_names_what_is_missing():
    model = load_model("tiny-llm").model
    with pytest.raises(ConfigError, match="match no linear layer"):
        apply_lora(model, r=2, alpha=4, dropout=0.0, targets=["not_a_layer"], full_modules=[])
    with pytest.raises(ConfigError, match="vision_tower.*name no module"):
        apply_lora(model, r=2, alpha=4, dropout=0.0, targets=["q_proj"], full_modules=["vision_tower"])


def test_merged_weights_equal_merge_and_unload_without_touching_the_model():
    """The streamed merged tensors are exactly merge_and_unload's, under the plain model's names
    (LoRA B is random here so every delta is non-zero), and the wrapped model is left as it was."""
    from duotune.models.lora import merged_copy, merged_weights

    model = apply_lora(load_model("tiny-llm").model, r=2, alpha=4, dropout=0.0, targets=["q_proj", "down_proj"],
                       full_modules=[])
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_()
    before = {n: p.clone() for n, p in model.named_parameters()}
    streamed = dict(merged_weights(model))
    expected = merged_copy(model).state_dict()
    assert streamed.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(streamed[name], value), name
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(streamed[q], model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())

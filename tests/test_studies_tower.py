"""Stage 1 of the vision warm-up (studies.tower): exact scene counts for every head, a tower that
trains (loss down, weights changed, other weights untouched) on the tiny LLaVA, and a saved, reused
`tower/final` checkpoint."""

import json

import pytest
import torch

from duotune.errors import ConfigError
from duotune.models import load_model
from duotune.studies.tower import HEADS, MAX_COUNT, ensure_tower, pretrain_tower, scene_counts, tower_data


def test_scene_counts_follow_the_heads():
    scene = [{"shape": "circle", "colour": "red"}, {"shape": "circle", "colour": "red"},
             {"shape": "square", "colour": "blue"}]
    counts = dict(zip(HEADS, scene_counts(scene)))
    assert len(HEADS) == 24 and counts["total"] == 3
    assert counts["colour:red"] == 2 and counts["colour:blue"] == 1 and counts["colour:green"] == 0
    assert counts["shape:circle"] == 2 and counts["shape:square"] == 1 and counts["shape:triangle"] == 0
    assert counts["red circle"] == 2 and counts["blue square"] == 1 and counts["blue circle"] == 0
    assert scene_counts(scene * 4)[0] == MAX_COUNT  # 12 items are capped at the last class


def test_tower_data_matches_the_generated_scenes():
    bundle = load_model("tiny-llava")
    pixels, counts = tower_data(6, 0, 96, bundle.processor.image_processor)
    assert pixels.shape[0] == 6 and counts.shape == (6, len(HEADS))
    assert ((counts[:, 0] >= 1) & (counts[:, 0] <= 9)).all()
    # per-colour counts, per-shape counts and per-pair counts each add up to the total
    assert torch.equal(counts[:, 1:6].sum(1), counts[:, 0]) and torch.equal(counts[:, 6:9].sum(1), counts[:, 0])
    assert torch.equal(counts[:, 9:].sum(1), counts[:, 0])
    again, _ = tower_data(6, 0, 96, bundle.processor.image_processor)
    assert torch.equal(pixels, again)  # deterministic by seed


def test_pretrain_tower_lowers_the_loss_and_trains_only_the_tower():
    torch.manual_seed(0)
    bundle = load_model("tiny-llava")
    model = bundle.model.model
    tower0 = {k: v.clone() for k, v in model.vision_tower.state_dict().items()}
    lm0 = {k: v.clone() for k, v in model.language_model.state_dict().items()}
    hist = pretrain_tower(bundle, images=32, steps=30, lr=3e-3, batch_size=16, test_images=8, progress=False)
    first, last = sum(hist["loss"][:5]) / 5, sum(hist["loss"][-5:]) / 5
    assert len(hist["loss"]) == 30 and last < first
    assert any(not torch.equal(v, model.vision_tower.state_dict()[k]) for k, v in tower0.items())
    assert all(torch.equal(v, model.language_model.state_dict()[k]) for k, v in lm0.items())
    for key in ("before", "after"):
        assert set(hist[key]) == {"total_accuracy", "mean_head_accuracy"}
        assert 0.0 <= hist[key]["total_accuracy"] <= 1.0


def test_pretrain_tower_is_deterministic_by_seed_whatever_the_global_rng():
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        bundle = load_model("tiny-llava")
        hist = pretrain_tower(bundle, images=16, steps=3, lr=1e-3, batch_size=8, test_images=4, progress=False)
        runs.append((hist["loss"], bundle.model.model.vision_tower.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(v, runs[1][1][k]) for k, v in runs[0][1].items())


def test_ensure_tower_saves_and_reuses(tmp_path):
    final = ensure_tower("tiny-llava", tmp_path, images=8, steps=2, lr=1e-3, progress=False)
    assert final == tmp_path / "tower" / "final" and load_model(str(final)).is_vlm
    history = json.loads((final / "tower.json").read_text())
    assert history["from"] == "tiny-llava" and len(history["loss"]) == 2
    assert (tmp_path / "tower" / "loss.png").stat().st_size > 0
    stamp = (final / "tower.json").stat().st_mtime_ns
    assert ensure_tower("tiny-llava", tmp_path, images=8, steps=2, lr=1e-3) == final
    assert (final / "tower.json").stat().st_mtime_ns == stamp  # reused, not trained again


def test_bad_sizes_and_text_models_are_config_errors():
    with pytest.raises(ConfigError, match="steps=0"):
        pretrain_tower(load_model("tiny-llava"), images=8, steps=0, lr=1e-3)
    with pytest.raises(ConfigError, match="no vision_tower"):
        pretrain_tower(load_model("tiny-llm"), images=8, steps=1, lr=1e-3)

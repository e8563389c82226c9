"""VLMs on the same code path: SFT, GRPO and SRFT train 2 steps on each tiny VLM (images from files)."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from duotune.config import load_config
from duotune.models import load_model
from duotune.trainers import TrainConfig, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tiny"


@pytest.fixture(scope="module")
def image_rows(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm")
    rows = []
    for i in range(4):
        img = Image.new("RGB", (28 + 28 * (i % 2), 28), color=(60 * i, 100, 200 - 40 * i))
        img.save(root / f"img{i}.png")
        rows.append({"prompt": [{"role": "user", "content": [
            {"type": "image"}, {"type": "text", "text": "How many squares?"}]}],
            "image": f"img{i}.png", "answer": str(i + 1), "demo": f"There are {i + 1}."})
    path = root / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize("model", ["tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-llava"])
@pytest.mark.parametrize("method", ["sft", "grpo", "srft"])
def test_vlm_methods_train(tmp_path, image_rows, model, method):
    before = torch.cat([p.detach().reshape(-1) for p in load_model(model).model.parameters()])
    cfg = load_config(TrainConfig, CONFIGS / f"{method}.yaml", [
        f"model={model}", f"data.train={image_rows}", f"run.output_dir={tmp_path}", "run.progress=false",
        "run.plots=false", "reward.names=[math]", "rollout.max_completion_length=6", "steps=2",
        # rewards of a random model are all 0; the entropy bonus guarantees a gradient for GRPO
        *(["algo.entropy_coef=0.01"] if method != "sft" else [])])
    res = train(cfg)
    recs = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2]
    assert all(isinstance(r["loss/total"], float) for r in recs)
    after = torch.cat([p.detach().reshape(-1) for p in res.bundle.model.parameters()])
    assert not torch.equal(before, after)

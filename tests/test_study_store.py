"""studies.store: the committed store of a multi-session study. Syncing finished runs both ways
(readable results only, training logs with them, nothing overwritten), the settings a finished run is
reused under (a warm-up whose weights changed is refused, naming the field) and the --store default."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from duotune.errors import ConfigError
from duotune.studies.store import (
    STORE,
    FinishedRuns,
    study_store,
    sync_store,
    warmup_settings,
    weights_fingerprint,
)


def test_sync_store_skips_unreadable_results_and_keeps_both_sides(tmp_path):
    root, store = tmp_path / "run", tmp_path / "store"
    (root / "results").mkdir(parents=True)
    (root / "results" / "a-s0.json").write_text('{"results": {}}')
    (root / "results" / "b-s0.json").write_text('{"resu')  # a half-written file: not finished
    (root / "runs" / "a-s0").mkdir(parents=True)
    (root / "runs" / "a-s0" / "metrics.jsonl").write_text('{"step": 1}\n')
    (store / "results").mkdir(parents=True)
    (store / "results" / "c-s0.json").write_text('{"results": {"x": 1}}')
    moved = sync_store(root, store)
    assert moved == {"to_store": ["a-s0.json"], "from_store": ["c-s0.json"], "differ": []}
    assert (store / "runs" / "a-s0" / "metrics.jsonl").read_text() == '{"step": 1}\n'
    assert not (store / "results" / "b-s0.json").exists()
    (root / "results" / "c-s0.json").write_text('{"results": {"x": 2}}')  # a re-run that differs
    assert sync_store(root, store)["differ"] == ["c-s0.json"]
    assert json.loads((store / "results" / "c-s0.json").read_text()) == {"results": {"x": 1}}


def test_a_rerun_that_reproduces_every_score_is_not_listed_as_differing(tmp_path):
    """`differ` compared the files byte for byte, so a re-run always differed (its walls, memory and
    run folder are the machine's); only what was measured counts now."""
    root, store = tmp_path / "run", tmp_path / "store"

    def result(folder, wall, per_item, kl=0.037292689085006714):
        (folder / "results").mkdir(parents=True, exist_ok=True)
        (folder / "results" / "grpo-s0.json").write_text(json.dumps({
            "method": "grpo", "run_dir": str(folder), "timings": {"train/x": wall},
            "curve": [{"step": 10, "wall_s": wall, "eval_wall_s": wall / 2, "host_rss_gb": wall / 100,
                       "kl_to_initial": kl,
                       "evals": {"l1": {"accuracy": sum(per_item) / 2, "per_item": per_item}}}]}))

    result(store, 453.0, [1.0, 0.0])
    result(root, 541.0, [1.0, 0.0], kl=0.0372700)  # the same scores on a busier machine
    assert sync_store(root, store)["differ"] == []  # (a float summed in another order is the same)
    result(root, 541.0, [1.0, 1.0])  # one item scored otherwise: it did not reproduce
    assert sync_store(root, store)["differ"] == ["grpo-s0.json"]


@dataclass(frozen=True)
class _Scale:
    name: str
    steps: int


def _checkpoint(folder: Path, weights: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "config.json").write_text("{}")
    return folder


def test_a_finished_run_is_not_reused_on_a_warmup_with_other_weights(tmp_path):
    warm = _checkpoint(tmp_path / "warmup" / "final", b"\x00" * 64)
    runs = FinishedRuns(tmp_path, warmup_settings(_Scale("protocol", 60), warm))
    runs.save("base", {"base": {"acc": 0.5}}, {"eval/base": 3.0, "eval/other": 9.0})
    got, timings = {}, {}
    again = FinishedRuns(tmp_path, warmup_settings(_Scale("protocol", 60), warm))
    assert again.load("base", got, timings) and got == {"base": {"acc": 0.5}} and timings == {"eval/base": 3.0}
    assert not again.load("grpo-s0", got, timings)
    _checkpoint(warm, b"\x00" * 63 + b"\x01")  # the warm-up trained again and came out different
    retrained = FinishedRuns(tmp_path, warmup_settings(_Scale("protocol", 60), warm))
    with pytest.raises(ConfigError, match=r"base\.json was made with other settings \(warmup_sha256 differ\)"):
        retrained.load("base", {}, {})
    with pytest.raises(ConfigError, match="steps differ"):
        FinishedRuns(tmp_path, {**again.settings, "steps": 30}).load("base", {}, {})


def test_weights_fingerprint_covers_every_weight_file_and_needs_one(tmp_path):
    a = _checkpoint(tmp_path / "a", b"abc")
    first = weights_fingerprint(a)
    assert first == weights_fingerprint(_checkpoint(tmp_path / "b", b"abc"))
    (a / "extra.bin").write_bytes(b"x")
    assert weights_fingerprint(a) != first
    (a / "config.json").write_text('{"changed": 1}')  # not a weight file
    (a / "extra.bin").unlink()
    assert weights_fingerprint(a) == first
    with pytest.raises(ConfigError, match="holds no weight files"):
        weights_fingerprint(tmp_path)


def test_the_store_is_on_by_default_only_at_the_protocol_scale():
    out = Path("runs/othink_protocol")
    assert study_store(None, "protocol", out) == STORE / "othink_protocol"
    assert study_store(None, "cpu", out) is None
    assert study_store("none", "protocol", out) is None
    assert study_store("elsewhere", "cpu", out) == Path("elsewhere/othink_protocol")


def test_git_keeps_what_the_store_holds():
    """The store is committed: a `runs/` ignore pattern once matched its runs/<run>/ folders too, so
    the training logs it copied never reached git."""
    import shutil
    import subprocess

    if shutil.which("git") is None or not (STORE.parent.parent / ".git").exists():
        pytest.skip("not a git checkout")
    for rel in ("protocol_arith/results/grpo-s0.json", "protocol_arith/runs/grpo-s0/metrics.jsonl",
                "othink_protocol/runs/counting-grpo_d-s0/config.yaml", "protocol_arith_teacher/pool/data.jsonl"):
        path = STORE / rel
        got = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=STORE.parent.parent)
        assert got.returncode == 1, f"git ignores {path}"

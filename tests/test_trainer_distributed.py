"""Data-parallel training: 2 CPU processes (gloo) train 2 GRPO steps; parameters end identical on both ranks.

Launched with torch.distributed.run (what `accelerate launch` runs underneath) and guarded with a
timeout: process-group teardown can hang on this machine, so the workers `os._exit` after writing.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny" / "grpo.yaml"

WORKER = textwrap.dedent("""
    import hashlib, json, os, sys
    import torch
    from duotune.config import load_config
    from duotune.trainers import TrainConfig, train

    out, data, config = sys.argv[1], sys.argv[2], sys.argv[3]
    cfg = load_config(TrainConfig, config, [f"data.train={data}", f"run.output_dir={out}", "run.name=ddp",
                                            "run.progress=false", "run.plots=false", "steps=2"])
    res = train(cfg)
    rank = int(os.environ["RANK"])
    flat = torch.cat([p.detach().reshape(-1) for p in res.bundle.model.parameters()])
    digest = hashlib.sha256(flat.numpy().tobytes()).hexdigest()
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"digest": digest, "steps": res.global_step}, f)
    sys.stdout.flush()
    os._exit(0)
""")


def test_two_process_data_parallel_keeps_ranks_identical(tmp_path):
    data = tmp_path / "toy.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"count to {i}", "answer": str(i)}) for i in range(8)))
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(tmp_path), str(data), str(CONFIG)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    results = [tmp_path / f"rank{r}.json" for r in (0, 1)]
    assert all(p.is_file() for p in results), out.decode(errors="replace")[-3000:]
    r0, r1 = (json.loads(p.read_text()) for p in results)
    assert r0["steps"] == r1["steps"] == 2
    assert r0["digest"] == r1["digest"]
    # only rank 0 writes the run folder's records
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2]

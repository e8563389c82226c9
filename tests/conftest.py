"""Fixtures shared by the trainer tests."""

import json

import pytest


@pytest.fixture(scope="session")
def data_file(tmp_path_factory):
    """Eight toy prompt/answer/demo rows (JSONL) that a random tiny model can train on."""
    path = tmp_path_factory.mktemp("data") / "toy.jsonl"
    rows = [{"prompt": f"write digits {i}", "answer": str(i), "demo": f"{i}{i}{i} {i}"} for i in range(8)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path

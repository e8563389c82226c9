"""Training state without pickle: a nested structure of dicts, lists, tuples, numbers, strings, torch
tensors and numpy arrays is written as `<stem>.json` (the structure) + `<stem>.safetensors` (the
tensors), so loading a checkpoint never runs code from it. Checkpoints of older duotune versions
(`trainer_state.pt`) load through `torch.load(weights_only=True)` only.

Imports json, numpy, torch and safetensors; no trainer logic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from duotune.errors import ConfigError

LEGACY = "trainer_state.pt"


def save_tree(obj: Any, folder: Path, stem: str) -> list[Path]:
    """Write `obj` as `<stem>.json` + `<stem>.safetensors` in `folder`; returns the two paths."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(obj, tensors, stem)
    paths = [folder / f"{stem}.json", folder / f"{stem}.safetensors"]
    paths[0].write_text(json.dumps(tree))
    save_file(tensors, str(paths[1]))
    return paths


def load_tree(folder: Path, stem: str) -> Any:
    """The structure written by `save_tree` (tensors on the CPU)."""
    tree = json.loads((folder / f"{stem}.json").read_text())
    return _decode(tree, load_file(str(folder / f"{stem}.safetensors")))


def load_legacy(path: Path) -> dict[str, Any]:
    """A `trainer_state.pt` of an older duotune, unpickled with `weights_only=True` (tensors, numbers,
    containers and numpy RNG arrays only); anything else, code included, is refused."""
    from numpy._core.multiarray import _reconstruct

    allowed = [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError ... all mean "refused"
        raise ConfigError(f"{path}: refusing to load it: it holds more than tensors and numbers, or is "
                          f"damaged ({type(e).__name__}: {str(e).splitlines()[0][:200]}); duotune never "
                          "unpickles code from a checkpoint. Resume from another checkpoint or use "
                          "run.resume=never") from None


def _encode(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().to("cpu").contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(obj.astype(np.int64) if obj.dtype.kind in "ui" else obj.copy())
        return {"__ndarray__": key, "dtype": obj.dtype.str}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):  # keys may be ints (optimizer state) or anything JSON cannot key by
        return {"__dict__": [[_encode(k, tensors, where), _encode(v, tensors, f"{where}.{k}")]
                             for k, v in obj.items()]}
    raise TypeError(f"cannot save {type(obj).__name__} at {where} without pickle; keep training "
                    "state to tensors, numbers, strings and containers")


def _decode(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, list):
        return [_decode(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if "__ndarray__" in tree:
        return tensors[tree["__ndarray__"]].numpy().astype(np.dtype(tree["dtype"]))
    if "__tuple__" in tree:
        return tuple(_decode(v, tensors) for v in tree["__tuple__"])
    return {_hashable(_decode(k, tensors)): _decode(v, tensors) for k, v in tree["__dict__"]}


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key

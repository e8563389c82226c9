"""Shape and mask validation shared by the algos modules; raises `duotune.errors.ShapeError`.

Every message names the argument, its shape and the expected shape. Imports torch and errors only.
"""

from __future__ import annotations

import torch

from duotune.errors import ShapeError


def tensor(name: str, x: object, ndim: int | None = None, dims: str = "") -> torch.Tensor:
    """`x` must be a tensor (of `ndim` dimensions when given; `dims` spells them, e.g. '[N, T]')."""
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{name} must be a torch.Tensor{' ' + dims if dims else ''}, "
                         f"got {type(x).__name__}")
    if ndim is not None and x.dim() != ndim:
        raise ShapeError(f"{name} has shape {tuple(x.shape)}; expected {ndim} dimensions {dims}".rstrip())
    return x


def same_shape(name: str, x: object, ref_name: str, ref: torch.Tensor) -> torch.Tensor:
    """`x` must have exactly `ref`'s shape."""
    x = tensor(name, x)
    if x.shape != ref.shape:
        raise ShapeError(f"{name} has shape {tuple(x.shape)}; expected {tuple(ref.shape)} "
                         f"(the shape of {ref_name})")
    return x


def mask(name: str, m: object, ref_name: str, ref: torch.Tensor) -> torch.Tensor:
    """A 0/1 or bool mask with `ref`'s shape, returned as bool."""
    m = same_shape(name, m, ref_name, ref)
    if m.dtype != torch.bool:
        if not bool(((m == 0) | (m == 1)).all()):
            raise ShapeError(f"{name} must hold only 0/1 (or bool) values")
        m = m.bool()
    return m


def rows(name: str, x: object, n: int) -> torch.Tensor:
    """A per-sequence vector of shape [N]."""
    x = tensor(name, x)
    if x.shape != (n,):
        raise ShapeError(f"{name} has shape {tuple(x.shape)}; expected ({n},) = [N], one value per row")
    return x


def rows_or_tokens(name: str, x: object, ref_name: str, ref: torch.Tensor) -> torch.Tensor:
    """A per-row [N] or per-token [N, T] tensor, broadcast to `ref`'s [N, T] shape."""
    x = tensor(name, x)
    n, t = ref.shape
    if x.shape == (n,):
        return x[:, None].expand(n, t)
    if x.shape == (n, t):
        return x
    raise ShapeError(f"{name} has shape {tuple(x.shape)}; expected ({n},) [N] or ({n}, {t}) [N, T] "
                     f"(the shape of {ref_name})")


def demo_tokens(is_demo: object, ref_name: str, ref: torch.Tensor) -> torch.Tensor:
    """Row flags [N] or a per-token demo mask [N, T] as a bool [N, T] mask."""
    d = rows_or_tokens("is_demo", is_demo, ref_name, ref)
    if d.dtype != torch.bool:
        if not bool(((d == 0) | (d == 1)).all()):
            raise ShapeError("is_demo must hold only 0/1 (or bool) values")
        d = d.bool()
    return d


def positive_length(l_max: object) -> int:
    """The normalising length L_max must be a positive integer."""
    if isinstance(l_max, bool) or not isinstance(l_max, int) or l_max <= 0:
        raise ShapeError(f"l_max must be a positive int (the maximum response length), got {l_max!r}")
    return l_max

"""Decode one image value from a data row (PIL image, path, bytes, HF `{"bytes","path"}` dict) to RGB.

Bad values (missing file, corrupt bytes, wrong type) raise `DataError` naming the file and row.
Imports PIL and `duotune.errors` only.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from duotune.errors import DataError


def load_image(value: Any, *, base_dir: str | os.PathLike[str] | None = None, file: str | None = None,
               row: int | None = None, field: str = "image", max_side: int | None = None) -> Image.Image:
    """Return `value` as a decoded RGB `PIL.Image.Image`.

    value: a PIL image; a path (relative paths are taken from `base_dir`, the data file's folder);
        raw `bytes`; or a dict with `bytes` and/or `path` (the Hugging Face `Image` feature layout).
    max_side: when set, shrink (never enlarge) so the longer side is at most this many pixels,
        keeping the aspect ratio.
    file, row, field: where the value came from, for the error message.
    """
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            value = value["bytes"]
        elif value.get("path") is not None:
            value = value["path"]
        else:
            raise DataError("image dict has neither 'bytes' nor 'path'", file=file, row=row, field=field)
    if isinstance(value, Image.Image):
        image = value
    elif isinstance(value, (bytes, bytearray, memoryview)):
        image = _decode(io.BytesIO(bytes(value)), "image bytes", file, row, field)
    elif isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.is_file():
            raise DataError(f"image file {str(path)!r} not found (relative paths are read from the "
                            "data file's folder)", file=file, row=row, field=field)
        image = _decode(path, f"image file {str(path)!r}", file, row, field)
    else:
        raise DataError(f"image must be a PIL image, a path, bytes or a {{'bytes', 'path'}} dict, "
                        f"not {type(value).__name__}", file=file, row=row, field=field)
    image = _to_rgb(image)
    if max_side is not None and max(image.size) > max_side:
        image = ImageOps.contain(image, (max_side, max_side), Image.Resampling.BICUBIC)
    return image


def _decode(src: Any, what: str, file: str | None, row: int | None, field: str) -> Image.Image:
    """Open and fully decode now, so a truncated or corrupt image fails here with its row."""
    try:
        with Image.open(src) as im:
            im.load()
            # Honour the EXIF orientation tag: phone photos are stored sideways otherwise.
            return ImageOps.exif_transpose(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{what} is not a readable image ({e})", file=file, row=row, field=field) from None


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy; transparent pixels go onto white (a bare convert would expose whatever colour
    the transparent pixels happen to store, often black, changing what the model sees)."""
    if image.mode == "RGB":
        return image.copy()
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")

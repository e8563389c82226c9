"""load_image: every accepted value type, RGB conversion, resizing, and errors naming file and row."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from duotune.data import load_image
from duotune.errors import DataError


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_path_relative_to_base_dir(tmp_path):
    Image.new("RGB", (5, 2), (10, 20, 30)).save(tmp_path / "a.png")
    img = load_image("a.png", base_dir=tmp_path)
    assert (img.mode, img.size, img.getpixel((4, 1))) == ("RGB", (5, 2), (10, 20, 30))
    assert load_image({"path": str(tmp_path / "a.png"), "bytes": None}).size == (5, 2)


def test_bytes_modes_and_transparency():
    gray = load_image(png_bytes(Image.new("L", (2, 2), 200)))
    assert (gray.mode, gray.getpixel((0, 0))) == ("RGB", (200, 200, 200))
    clear = load_image({"bytes": png_bytes(Image.new("RGBA", (2, 2), (0, 0, 0, 0)))})
    assert clear.getpixel((1, 1)) == (255, 255, 255)  # transparent -> white, not black
    half = load_image(Image.new("RGBA", (1, 1), (0, 0, 255, 128)))
    assert half.getpixel((0, 0)) == (127, 127, 255)


def test_max_side_shrinks_only():
    img = Image.new("RGB", (100, 50))
    assert load_image(img, max_side=20).size == (20, 10)
    assert load_image(img, max_side=400).size == (100, 50)
    assert load_image(img) is not img  # a copy: callers may mutate it


@pytest.mark.parametrize("value, message", [
    (b"not an image", "image bytes is not a readable image"),
    ("missing.png", "not found"),
    (3.5, "not float"),
    ({"path": None, "bytes": None}, "neither 'bytes' nor 'path'"),
])
def test_errors_name_file_and_row(tmp_path, value, message):
    with pytest.raises(DataError, match=message) as info:
        load_image(value, base_dir=tmp_path, file="d.jsonl", row=7, field="images")
    assert str(info.value).startswith("file d.jsonl, row 7, field 'images': ")


def test_truncated_file(tmp_path):
    data = png_bytes(Image.new("RGB", (64, 64), (1, 2, 3)))
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.png' is not a readable image"):
        load_image(tmp_path / "cut.png", file="d.jsonl", row=2)

"""Shape scenes for the vision tasks: non-overlapping circles, squares and triangles drawn with PIL,
their exact pixel boxes, and exact English descriptions (the scene text and the demo wording).

Imports PIL and `duotune.errors` only.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from PIL import Image, ImageDraw

from duotune.errors import ConfigError

BACKGROUND = (255, 255, 255)
COLOURS = {"red": (220, 40, 40), "green": (30, 160, 60), "blue": (40, 80, 220),
           "yellow": (235, 190, 20), "purple": (140, 60, 190)}
SHAPES = ("circle", "square", "triangle")
SIZES = {"large": 0.085, "small": 0.05}  # half of a shape's box side, as a fraction of the image side
MARGIN = 2  # pixels kept free at the image border
GAP = 3  # shapes' boxes are at least this many pixels apart, so no two shapes touch


def half_extent(size: str, image_size: int) -> int:
    return max(3, round(SIZES[size] * image_size))


def place(rng: random.Random, specs: list[tuple[str, str, str]], image_size: int) -> list[dict[str, Any]]:
    """Scene items for (shape, colour, size) specs at random non-overlapping positions, in spec order.

    Each item: shape, colour, size, center [x, y], half (half the box side) and bbox [x1, y1, x2, y2],
    the exact extent of its drawn pixels (x2, y2 exclusive, so x2 - x1 is the width in pixels).
    """
    for _ in range(50):
        placed: list[dict[str, Any]] = []
        for shape, colour, size in specs:
            h = half_extent(size, image_size)
            lo, hi = h + MARGIN, image_size - 1 - h - MARGIN
            for _ in range(100):
                cx, cy = rng.randint(lo, hi), rng.randint(lo, hi)
                # Chebyshev distance: the two boxes are apart along at least one axis by more than GAP.
                if all(max(abs(cx - o["center"][0]), abs(cy - o["center"][1])) > h + o["half"] + GAP
                       for o in placed):
                    break
            else:
                break
            placed.append({"shape": shape, "colour": colour, "size": size, "center": [cx, cy], "half": h})
        else:
            for item in placed:
                item["bbox"] = pixel_bbox(item, image_size)
            return placed
    raise ConfigError(f"could not place {len(specs)} non-overlapping shapes in a {image_size}x{image_size} "
                      "image; lower max_items or raise size")


def _draw_shape(draw: ImageDraw.ImageDraw, item: dict[str, Any], fill: Any) -> None:
    (cx, cy), h = item["center"], item["half"]
    if item["shape"] == "circle":
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif item["shape"] == "square":
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    else:  # an upward triangle; (cx, cy) is inside it (half-width h/2 at that height)
        draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=fill)


def pixel_bbox(item: dict[str, Any], image_size: int) -> list[int]:
    """The item's drawn pixels' box, measured by drawing it alone on a mask (so it is exact, not assumed)."""
    mask = Image.new("L", (image_size, image_size), 0)
    _draw_shape(ImageDraw.Draw(mask), item, 255)
    box = mask.getbbox()
    assert box is not None, "a placed shape always has pixels inside the image"
    return list(box)


def render(scene: list[dict[str, Any]], image_size: int) -> Image.Image:
    """The scene on a plain white RGB image (no anti-aliasing: every shape pixel has its exact colour)."""
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for item in scene:
        _draw_shape(draw, item, COLOURS[item["colour"]])
    return image


def plural(noun: str, k: int) -> str:
    return noun if k == 1 else noun + "s"


def join_and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _order(item_key: tuple[str, ...]) -> tuple[int, ...]:
    """Sort groups by colour, then shape, then size, in the order the constants list them."""
    tables = {**{c: i for i, c in enumerate(COLOURS)}, **{s: i for i, s in enumerate(SHAPES)},
              **{z: i for i, z in enumerate(SIZES)}}
    return tuple(tables[v] for v in item_key)


def group_phrases(items: list[dict[str, Any]], with_size: bool = False) -> list[tuple[str, int]]:
    """('2 red circles', 2) per (colour, shape[, size]) group, in colour/shape/size order."""
    keys = Counter((it["colour"], it["shape"], it["size"]) if with_size else (it["colour"], it["shape"])
                   for it in items)
    out = []
    for key in sorted(keys, key=_order):
        k = keys[key]
        words = ([key[2]] if with_size else []) + [key[0], plural(key[1], k)]
        out.append((f"{k} {' '.join(words)}", k))
    return out


def counting_text(items: list[dict[str, Any]]) -> str:
    """Exact scene description for captions: '5 items on a white background: 2 large red circles, ...'."""
    groups = [p for p, _ in group_phrases(items, with_size=True)]
    return f"{len(items)} {plural('item', len(items))} on a white background: {join_and(groups)}."


def location(center: list[int], image_size: int) -> str:
    """Coarse position in words ('top left', 'middle', 'bottom right', ...) by thirds of the image."""
    col = ("left", "center", "right")[min(2, 3 * center[0] // image_size)]
    row = ("top", "middle", "bottom")[min(2, 3 * center[1] // image_size)]
    if row == "middle":
        return "middle" if col == "center" else f"middle {col}"
    return row if col == "center" else f"{row} {col}"

"""Vision task `geometry`: labelled triangle diagrams with exact answers (math reward, math-verify).

Kinds: third angle from two angles; base angle of an isosceles triangle; exterior angle; hypotenuse or
leg of a right triangle (Pythagorean triples, or exact radicals such as 5\\sqrt{2}). The given numbers
are stated in the question too unless numbers_in_text=false (reading digits from pixels is OCR).
Imports PIL, `duotune.tasks.base`/`shapes` only.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from duotune.tasks.base import Candidate, Param, TaskSpec, register_task
from duotune.tasks.shapes import join_and

KINDS = ("angle", "isosceles", "exterior", "hypotenuse", "leg")
# Every Pythagorean triple (legs a, b in either order) with hypotenuse up to 50.
TRIPLES = [(a, b, c) for c in range(5, 51) for a in range(3, c) for b in range(3, c)
           if a * a + b * b == c * c]
ANGLE_KINDS = ("angle", "isosceles", "exterior")


def radical(n: int) -> str:
    """sqrt(n) in simplest radical form as LaTeX: 10, \\sqrt{7}, 5\\sqrt{2}."""
    s = max(k for k in range(1, math.isqrt(n) + 1) if n % (k * k) == 0)
    m = n // (s * s)
    return str(s) if m == 1 else (f"\\sqrt{{{m}}}" if s == 1 else f"{s}\\sqrt{{{m}}}")


def _angles(rng: random.Random, kind: str) -> tuple[dict[str, int], str, int, tuple[int, int]]:
    """(given, unknown, answer, drawn angles at A and B) for the angle kinds."""
    if kind == "angle":
        a = rng.randint(25, 110)
        b = rng.randint(25, 155 - a)
        return {"angle A": a, "angle B": b}, "angle C", 180 - a - b, (a, b)
    if kind == "isosceles":
        c = 2 * rng.randint(10, 60)
        return {"angle C": c}, "angle A", (180 - c) // 2, ((180 - c) // 2, (180 - c) // 2)
    a = rng.randint(25, 100)
    c = rng.randint(25, 150 - a)
    return {"angle A": a, "angle C": c}, "angle CBD", a + c, (a, 180 - a - c)


def _sides(rng: random.Random, kind: str, sqrt_fraction: float) -> tuple[dict[str, int], str, int, tuple]:
    """(given, unknown, squared answer, legs (BC, AC)) for the right-triangle kinds (right angle at C)."""
    exact = rng.random() < sqrt_fraction
    if kind == "hypotenuse":
        if exact:
            a, b = rng.randint(1, 12), rng.randint(1, 12)
        else:
            a, b, _ = rng.choice(TRIPLES)
        return {"BC": a, "AC": b}, "AB", a * a + b * b, (a, b)
    if exact:
        c = rng.randint(2, 15)
        a = rng.randint(1, c - 1)
    else:
        a, _, c = rng.choice(TRIPLES)
    return {"AB": c, "BC": a}, "AC", c * c - a * a, (a, math.sqrt(c * c - a * a))


def _question(kind: str, given: dict[str, int], unknown: str, in_text: bool) -> str:
    find = f"Find the measure of {unknown} in degrees." if kind in ANGLE_KINDS else \
        f"Find the length of {unknown}. Give the exact value."
    right = "right " if kind in ("hypotenuse", "leg") else ""
    if not in_text:
        extra = " Side AB is extended past B to point D." if kind == "exterior" else ""
        return f"The image shows {right}triangle ABC with its given measures labelled.{extra} {find}"
    facts = [f"{k} = {v}°" if k.startswith("angle") else f"{k} = {v}" for k, v in given.items()]
    if right:
        facts.insert(0, "angle C = 90°")
    if kind == "isosceles":
        facts.insert(0, "AC = BC")
    extra = " Side AB is extended past B to point D." if kind == "exterior" else ""
    return f"In {right}triangle ABC, {join_and(facts)}.{extra} {find}"


def _reasoning(kind: str, given: dict[str, int], square: int | None, answer: str) -> str:
    g = list(given.values())
    if kind == "angle":
        return (f"The angles of a triangle add up to 180°. "
                f"Angle C = 180° - {g[0]}° - {g[1]}° = {answer}°.")
    if kind == "isosceles":
        return (f"Since AC = BC, the base angles A and B are equal, and the three angles add up to 180°. "
                f"Angle A = (180° - {g[0]}°) / 2 = {answer}°.")
    if kind == "exterior":
        return (f"Angle CBD is the exterior angle of triangle ABC at B, so it equals the sum of the two "
                f"remote interior angles A and C: {g[0]}° + {g[1]}° = {answer}°.")
    if kind == "hypotenuse":
        a, b = g
        eq = f"AB^2 = BC^2 + AC^2 = {a}^2 + {b}^2 = {a * a} + {b * b} = {square}"
        return f"By the Pythagorean theorem, {eq}, so AB = \\sqrt{{{square}}} = {answer}."
    c, a = g
    eq = f"AC^2 = AB^2 - BC^2 = {c}^2 - {a}^2 = {c * c} - {a * a} = {square}"
    return f"By the Pythagorean theorem, {eq}, so AC = \\sqrt{{{square}}} = {answer}."


def _scene_text(kind: str, given: dict[str, int], unknown: str) -> str:
    marks = [f"{k} is labelled {v}°" if k.startswith("angle") else f"side {k} is labelled {v}"
             for k, v in given.items()]
    what = "angle" if kind in ANGLE_KINDS else "side"
    head = "A diagram of right triangle ABC with the right angle at C" if what == "side" else \
        "A diagram of triangle ABC"
    if kind == "isosceles":
        head += ", with equal sides AC and BC tick-marked"
    if kind == "exterior":
        head += ", with side AB extended past B to point D"
    unknown_text = unknown if what == "angle" else f"side {unknown}"
    marked = join_and(marks)
    return f"{head}. {marked[0].upper() + marked[1:]}; {unknown_text} is marked with a question mark."


def _vertices(kind: str, drawn: tuple) -> dict[str, tuple[float, float]]:
    """Vertex positions in math units (y up) with the drawn triangle's true proportions."""
    if kind in ANGLE_KINDS:
        a, b = (math.radians(v) for v in drawn)
        ac = math.sin(b) / math.sin(a + b)  # law of sines with AB = 1
        pts = {"A": (0.0, 0.0), "B": (1.0, 0.0), "C": (ac * math.cos(a), ac * math.sin(a))}
        if kind == "exterior":
            pts["D"] = (1.45, 0.0)
        return pts
    bc, ac = drawn
    return {"C": (0.0, 0.0), "B": (float(bc), 0.0), "A": (0.0, float(ac))}


def _fit(pts: dict[str, tuple[float, float]], size: int, mirror: bool) -> dict[str, list[float]]:
    """Scale and centre into the image (y down), keeping a margin for labels; optionally mirrored."""
    xs = [(-x if mirror else x) for x, _ in pts.values()]
    ys = [y for _, y in pts.values()]
    pad = 0.17 * size
    scale = (size - 2 * pad) / max(max(xs) - min(xs), max(ys) - min(ys))
    ox = (size - scale * (max(xs) - min(xs))) / 2 - scale * min(xs)
    oy = (size + scale * (max(ys) - min(ys))) / 2 + scale * min(ys)
    return {k: [round(ox + scale * (-x if mirror else x), 1), round(oy - scale * y, 1)]
            for k, (x, y) in pts.items()}


def _unit(dx: float, dy: float) -> tuple[float, float]:
    n = math.hypot(dx, dy) or 1.0
    return dx / n, dy / n


def _render(v: dict[str, list[float]], kind: str, labels: dict[str, str], size: int) -> Image.Image:
    """Triangle outline, vertex letters outside, angle labels along bisectors, side labels outside."""
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(9, round(0.058 * size)))
    tri = [tuple(v[k]) for k in "ABC"]
    draw.polygon(tri, outline=(0, 0, 0), width=max(1, size // 112))
    if "D" in v:
        draw.line([tuple(v["B"]), tuple(v["D"])], fill=(0, 0, 0), width=max(1, size // 112))
    gx, gy = sum(p[0] for p in tri) / 3, sum(p[1] for p in tri) / 3
    for name in v:
        ux, uy = _unit(v[name][0] - gx, v[name][1] - gy) if name != "D" else (0.0, -1.0)
        draw.text((v[name][0] + ux * 0.07 * size, v[name][1] + uy * 0.07 * size), name, font=font,
                  fill=(0, 0, 0), anchor="mm")
    for key, text in labels.items():
        draw.text(_label_point(v, key, size), text, font=font, fill=(200, 0, 0), anchor="mm")
    if kind in ("hypotenuse", "leg"):
        _right_marker(draw, v, 0.06 * size)
    if kind == "isosceles":
        for end in "AB":
            _tick(draw, v["C"], v[end], 0.03 * size)
    return image


def _label_point(v: dict[str, list[float]], key: str, size: int) -> tuple[float, float]:
    """Angles: along the bisector inside the angle; sides: beyond the side's midpoint, away from the
    opposite vertex."""
    if key.startswith("angle"):
        name = key.split()[1]
        at, rays = (v["B"], (v["C"], v["D"])) if name == "CBD" else \
            (v[name], [v[k] for k in "ABC" if k != name])
        u = [_unit(r[0] - at[0], r[1] - at[1]) for r in rays]
        bx, by = _unit(u[0][0] + u[1][0], u[0][1] + u[1][1])
        half = math.acos(max(-1.0, min(1.0, u[0][0] * u[1][0] + u[0][1] * u[1][1]))) / 2
        # Far enough along the bisector to clear both sides, but short of the opposite side
        # (bisector length 2pq cos(theta/2) / (p + q)).
        d = min(0.3 * size, max(0.1 * size, 0.05 * size / max(math.sin(half), 1e-3)))
        if name != "CBD":
            p_len, q_len = (math.dist(at, r) for r in rays)
            d = min(d, 0.6 * 2 * p_len * q_len * math.cos(half) / (p_len + q_len))
        return at[0] + bx * d, at[1] + by * d
    p, q = v[key[0]], v[key[1]]
    opposite = v[next(k for k in "ABC" if k not in key)]
    mx, my = (p[0] + q[0]) / 2, (p[1] + q[1]) / 2
    ux, uy = _unit(mx - opposite[0], my - opposite[1])
    return mx + ux * 0.07 * size, my + uy * 0.07 * size


def _right_marker(draw: ImageDraw.ImageDraw, v: dict[str, list[float]], s: float) -> None:
    (cx, cy), (ax, ay), (bx, by) = v["C"], _unit(v["A"][0] - v["C"][0], v["A"][1] - v["C"][1]), \
        _unit(v["B"][0] - v["C"][0], v["B"][1] - v["C"][1])
    pts = [(cx + ax * s, cy + ay * s), (cx + (ax + bx) * s, cy + (ay + by) * s), (cx + bx * s, cy + by * s)]
    draw.line(pts, fill=(0, 0, 0), width=1)


def _tick(draw: ImageDraw.ImageDraw, p: list[float], q: list[float], s: float) -> None:
    mx, my = (p[0] + q[0]) / 2, (p[1] + q[1]) / 2
    nx, ny = _unit(-(q[1] - p[1]), q[0] - p[0])
    draw.line([(mx - nx * s, my - ny * s), (mx + nx * s, my + ny * s)], fill=(0, 0, 0), width=1)


def draw_geometry(rng: random.Random, p: dict[str, Any]) -> Candidate:
    kind = rng.choice(p["kinds"])
    if kind in ANGLE_KINDS:
        given, unknown, value, drawn = _angles(rng, kind)
        square, answer = None, str(value)
    else:
        given, unknown, square, drawn = _sides(rng, kind, p["sqrt_fraction"])
        answer = radical(square)
    vertices = _fit(_vertices(kind, drawn), p["size"], mirror=rng.random() < 0.5)
    labels = {k: (f"{v}°" if k.startswith("angle") else str(v)) for k, v in given.items()}
    labels[unknown] = "?"
    row = {"question": _question(kind, given, unknown, p["numbers_in_text"]), "answer": answer,
           "reward_type": "math",
           "demo": f"<think>{_reasoning(kind, given, square, answer)}</think>\n<answer>{answer}</answer>",
           "scene_text": _scene_text(kind, given, unknown), "kind": kind, "given": given, "unknown": unknown,
           "vertices": vertices, "numbers_in_text": p["numbers_in_text"],
           "width": p["size"], "height": p["size"]}
    key = f"geometry:{kind}:{json.dumps(given, sort_keys=True)}"
    return Candidate(row, key, lambda: _render(vertices, kind, labels, p["size"]))


register_task(TaskSpec(
    name="geometry", draw=draw_geometry, vision=True,
    help="vision: labelled triangle diagrams (angles, Pythagoras) with exact answers; math reward",
    params={
        "size": Param(224, "image side in pixels (square images)", low=96, high=1024),
        "kinds": Param(list(KINDS), "problem kinds to mix: angle (third angle), isosceles (base angle), "
                                    "exterior (exterior angle), hypotenuse, leg (right triangles)",
                       choices=KINDS, multi=True),
        "numbers_in_text": Param(True, "also state the given numbers in the question (false: only the "
                                       "image labels carry them, which needs OCR)"),
        "sqrt_fraction": Param(0.3, "share of hypotenuse/leg problems with free integer sides (answers "
                                    "mostly radicals such as 5\\sqrt{2}); the rest use Pythagorean triples",
                               low=0.0, high=1.0),
    },
))

"""Vision tasks on shape scenes: `counting` (digit), `counting_mcq` (mcq) and `grounding` (iou).

Every row keeps its scene (shapes with centres and exact pixel boxes) so answers can be checked, an
exact `scene_text` (the six-stage pipeline's caption) and a programmatic <think>/<answer> demo.
Imports `duotune.tasks.base`/`shapes` and `duotune.errors` only.
"""

from __future__ import annotations

import json
import random
from typing import Any

from duotune.errors import ConfigError
from duotune.tasks.base import Candidate, Param, TaskSpec, register_task
from duotune.tasks.shapes import (
    COLOURS,
    SHAPES,
    SIZES,
    counting_text,
    group_phrases,
    join_and,
    location,
    place,
    plural,
    render,
)

VARIANTS = ("total", "colour", "shape")
LETTERS = "ABCD"


def _scene_params(max_items: int, max_high: int) -> dict[str, Param]:
    return {
        "size": Param(224, "image side in pixels (square images)", low=64, high=1024),
        "min_items": Param(1, "fewest shapes in an image", low=1, high=max_high),
        "max_items": Param(max_items, "most shapes in an image", low=1, high=max_high),
    }


def _check_items(p: dict[str, Any]) -> None:
    if p["min_items"] > p["max_items"]:
        raise ConfigError(f"min_items={p['min_items']} is larger than max_items={p['max_items']}; "
                          "make min_items <= max_items")


def _scene_key(task: str, scene: list[dict[str, Any]], extra: Any) -> str:
    layout = [(s["shape"], s["colour"], s["size"], *s["center"]) for s in scene]
    return f"{task}:{json.dumps(extra)}:{json.dumps(layout)}"


def _count_scene(rng: random.Random, p: dict[str, Any]) -> tuple[list[dict[str, Any]], str, str | None]:
    """A scene of n shapes and the question variant; for colour/shape questions the asked-about
    count k is drawn uniformly in 1..n first, so answers spread over the whole range."""
    n = rng.randint(p["min_items"], p["max_items"])
    variant = rng.choice(VARIANTS) if p["variant"] == "mix" else p["variant"]
    colours, sizes = list(COLOURS), list(SIZES)
    specs = [(rng.choice(SHAPES), rng.choice(colours), rng.choice(sizes)) for _ in range(n)]
    target = None
    if variant != "total":
        axis, values = (1, colours) if variant == "colour" else (0, list(SHAPES))
        target = rng.choice(values)
        k = rng.randint(1, n)
        others = [v for v in values if v != target]
        for i, spec in enumerate(specs):
            value = target if i < k else rng.choice(others)
            specs[i] = (value, spec[1], spec[2]) if axis == 0 else (spec[0], value, spec[2])
        rng.shuffle(specs)
    return place(rng, specs, p["size"]), variant, target


def _count_question(variant: str, target: str | None) -> tuple[str, str]:
    """(question, noun of what is counted)."""
    if variant == "total":
        return "How many items are there in the image?", "item"
    if variant == "colour":
        return f"How many {target} items are there in the image?", f"{target} item"
    return f"How many {target}s are there in the image?", str(target)


def _count_reasoning(scene: list[dict[str, Any]], variant: str, target: str | None) -> tuple[str, int]:
    """The demo's reasoning ('I count ...: 2 red circles and 1 blue square. That is 2 + 1 = 3 items.')."""
    relevant = [s for s in scene if variant == "total" or target in (s["colour"], s["shape"])]
    _, noun = _count_question(variant, target)
    groups = group_phrases(relevant)
    k = len(relevant)
    intro = "I count the items in the image" if variant == "total" else f"I look for the {plural(noun, 2)}"
    total = f"{k}" if len(groups) == 1 else " + ".join(str(c) for _, c in groups) + f" = {k}"
    return f"{intro}: {join_and([g for g, _ in groups])}. That is {total} {plural(noun, k)}.", k


def _count_row(scene: list[dict[str, Any]], variant: str, target: str | None, size: int) -> dict[str, Any]:
    return {"scene_text": counting_text(scene), "scene": scene, "variant": variant, "target": target,
            "width": size, "height": size}


def draw_counting(rng: random.Random, p: dict[str, Any]) -> Candidate:
    scene, variant, target = _count_scene(rng, p)
    question, _ = _count_question(variant, target)
    reasoning, k = _count_reasoning(scene, variant, target)
    row = {"question": question, "answer": str(k), "reward_type": "digit",
           "demo": f"<think>{reasoning}</think>\n<answer>{k}</answer>",
           "count": k, **_count_row(scene, variant, target, p["size"])}
    return Candidate(row, _scene_key("counting", scene, [variant, target]), lambda: render(scene, p["size"]))


def draw_counting_mcq(rng: random.Random, p: dict[str, Any]) -> Candidate:
    scene, variant, target = _count_scene(rng, p)
    question, _ = _count_question(variant, target)
    reasoning, k = _count_reasoning(scene, variant, target)
    # Distractors within 4 of the truth (never below 1), so the options are all plausible counts.
    values = [k, *rng.sample([v for v in range(max(1, k - 4), k + 5) if v != k], 3)]
    rng.shuffle(values)
    letter = LETTERS[values.index(k)]
    lines = "\n".join(f"{L}) {v}" for L, v in zip(LETTERS, values))
    row = {"question": f"{question}\n{lines}\nAnswer with the letter of the correct option.",
           "answer": letter, "reward_type": "mcq",
           "demo": f"<think>{reasoning} The count {k} is option {letter}.</think>\n<answer>{letter}</answer>",
           "choices": values, "count": k, **_count_row(scene, variant, target, p["size"])}
    return Candidate(row, _scene_key("counting_mcq", scene, [variant, target, values]),
                     lambda: render(scene, p["size"]))


def _frame(p: dict[str, Any]) -> tuple[str, Any]:
    """(how the question states the frame, function from a pixel box to the stated frame)."""
    size, d = p["size"], p["decimals"]
    if p["frame"] == "pixel":
        return (f"Give the coordinates in pixels of the {size}x{size} image (origin at the top-left corner, "
                "x to the right, y down).", lambda box: [int(v) for v in box])
    return (f"Give the coordinates normalized to 0-1 (x divided by the image width, y divided by the image "
            f"height, origin at the top-left corner) with {d} decimals.",
            lambda box: [round(v / size, d) for v in box])


def _fmt_box(box: list[float], p: dict[str, Any]) -> str:
    if p["frame"] == "pixel":
        return "[" + ", ".join(str(int(v)) for v in box) + "]"
    return "[" + ", ".join(f"{v:.{p['decimals']}f}" for v in box) + "]"


def draw_grounding(rng: random.Random, p: dict[str, Any]) -> Candidate:
    n = rng.randint(p["min_items"], p["max_items"])
    shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
    others = [(s, c) for s in SHAPES for c in COLOURS if (s, c) != (shape, colour)]
    # The target's (colour, shape) appears exactly once, so "the red circle" names one item.
    specs = [(shape, colour, rng.choice(list(SIZES)))] + [(*rng.choice(others), rng.choice(list(SIZES)))
                                                          for _ in range(n - 1)]
    rng.shuffle(specs)
    scene = place(rng, specs, p["size"])
    index = next(i for i, s in enumerate(scene) if (s["shape"], s["colour"]) == (shape, colour))
    frame_text, to_frame = _frame(p)
    box = to_frame(scene[index]["bbox"])
    answer = _fmt_box(box, p)
    x1, y1, x2, y2 = answer.strip("[]").split(", ")
    demo = (f"<think>The {colour} {shape} is at the {location(scene[index]['center'], p['size'])} of the "
            f"image. Its left edge is at x = {x1} and its right edge at x = {x2}; its top is at y = {y1} "
            f"and its bottom at y = {y2}.</think>\n<answer>{answer}</answer>")
    listed = sorted(scene, key=lambda s: (s["center"][1], s["center"][0]))
    items = "; ".join(f"a {s['size']} {s['colour']} {s['shape']} at {_fmt_box(to_frame(s['bbox']), p)}"
                      for s in listed)
    row = {"question": f"Give the bounding box of the {colour} {shape} in the image as [x1, y1, x2, y2]. "
                       f"{frame_text}",
           "answer": answer, "reward_type": "iou", "demo": demo,
           "scene_text": f"{n} {plural('item', n)} on a white background, with boxes [x1, y1, x2, y2] in "
                         f"the {p['frame']} frame of a {p['size']}x{p['size']} image: {items}.",
           "scene": scene, "target": index, "target_colour": colour, "target_shape": shape,
           "frame": p["frame"], "box": box, "box_pixels": scene[index]["bbox"],
           "width": p["size"], "height": p["size"]}
    return Candidate(row, _scene_key("grounding", scene, [shape, colour]), lambda: render(scene, p["size"]))


_VARIANT = Param("total", "question kind: total ('How many items?'), colour ('How many red items?'), "
                          "shape ('How many circles?') or mix (one of the three per row)",
                 choices=(*VARIANTS, "mix"))

register_task(TaskSpec(
    name="counting", draw=draw_counting, vision=True, check=_check_items,
    help="vision: count 1-9 coloured shapes (total, by colour or by shape); digit reward",
    params={**_scene_params(9, 12), "variant": _VARIANT},
))
register_task(TaskSpec(
    name="counting_mcq", draw=draw_counting_mcq, vision=True, check=_check_items,
    help="vision: counting with options A-D (one correct); mcq reward, the answer is the letter",
    params={**_scene_params(9, 12), "variant": _VARIANT},
))
register_task(TaskSpec(
    name="grounding", draw=draw_grounding, vision=True, check=_check_items,
    help="vision: bounding box [x1, y1, x2, y2] of the one <colour> <shape>; iou reward",
    params={**_scene_params(6, 9),
            "frame": Param("normalized", "box frame stated in the question: normalized (0-1) or pixel",
                           choices=("normalized", "pixel")),
            "decimals": Param(3, "decimals of normalized coordinates", choices=(2, 3))},
))

"""Vision task generators: answers re-derived from each row's scene and from the rendered pixels,
exact boxes, non-overlap, determinism, split disjointness and the written files."""

import json
import math
import re

import numpy as np
import pytest
import sympy
from PIL import ImageDraw

from duotune.data import load_examples
from duotune.errors import ConfigError, UnknownNameError
from duotune.tasks import make_examples, make_rows, split_of, task_params, tasks, write_task
from duotune.tasks.geometry import radical
from duotune.tasks.shapes import BACKGROUND, COLOURS

VISION = ("counting", "counting_mcq", "geometry", "grounding")


def regions(image):
    """Connected single-colour regions of non-background pixels: (colour, (x1, y1, x2, y2)) each,
    found by flood-filling from pixels, independently of the generator's own bookkeeping."""
    img = image.copy()
    out = []
    while True:
        arr = np.asarray(img)
        todo = np.argwhere(np.any(arr != BACKGROUND, axis=2) & np.any(arr != (0, 0, 1), axis=2))
        if not len(todo):
            return out
        y, x = (int(v) for v in todo[0])
        colour = img.getpixel((x, y))
        ImageDraw.floodfill(img, (x, y), (0, 0, 1))
        filled = np.all(np.asarray(img) == (0, 0, 1), axis=2) & ~np.all(arr == (0, 0, 1), axis=2)
        ys, xs = np.nonzero(filled)
        out.append((colour, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)))


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def answer_tag(demo):
    return re.fullmatch(r"<think>.+</think>\n<answer>(.+)</answer>", demo, re.DOTALL).group(1)


def test_registry_lists_every_task_with_help():
    assert set(VISION) | {"arithmetic"} == set(tasks.names())
    for name in tasks.names():
        assert tasks.describe(name)
        assert all(p.help for p in task_params(name).values())


@pytest.mark.parametrize("task", ["counting", "counting_mcq"])
def test_counting_answer_equals_scene_count(task):
    rows = make_rows(task, 60, seed=3, variant="mix")
    assert {r["variant"] for r, _ in rows} == {"total", "colour", "shape"}
    for row, _ in rows:
        scene, target = row["scene"], row["target"]
        assert 1 <= len(scene) <= 9
        if row["variant"] == "total":
            expected = len(scene)
            assert row["question"].startswith("How many items are there in the image?")
        elif row["variant"] == "colour":
            expected = sum(s["colour"] == target for s in scene)
            assert row["question"].startswith(f"How many {target} items")
        else:
            expected = sum(s["shape"] == target for s in scene)
            assert row["question"].startswith(f"How many {target}s")
        assert row["count"] == expected >= 1
        if task == "counting":
            assert row["answer"] == str(expected) and row["reward_type"] == "digit"
        else:
            assert row["reward_type"] == "mcq" and len(set(row["choices"])) == 4
            assert row["choices"]["ABCD".index(row["answer"])] == expected
            assert f"{row['answer']}) {expected}\n" in row["question"]
        assert answer_tag(row["demo"]) == row["answer"]
        assert f"{len(scene)} item" in row["scene_text"]


def test_counting_demo_and_scene_text_are_exact():
    row, _ = make_rows("counting", 1, seed=0)[0]
    # seed 0, item 0: a large yellow triangle, a large red circle, a small blue circle (see the scene).
    assert [(s["shape"], s["colour"], s["size"]) for s in row["scene"]] == [
        ("triangle", "yellow", "large"), ("circle", "red", "large"), ("circle", "blue", "small")]
    assert row["demo"] == ("<think>I count the items in the image: 1 red circle, 1 blue circle and 1 yellow "
                           "triangle. That is 1 + 1 + 1 = 3 items.</think>\n<answer>3</answer>")
    assert row["scene_text"] == ("3 items on a white background: 1 large red circle, 1 small blue circle and "
                                 "1 large yellow triangle.")


@pytest.mark.parametrize("task", ["counting", "grounding"])
def test_shapes_do_not_overlap_and_stay_inside(task):
    for row, _ in make_rows(task, 80, seed=5, max_items=9, size=112):
        boxes = [s["bbox"] for s in row["scene"]]
        assert all(0 <= b[0] < b[2] <= 112 and 0 <= b[1] < b[3] <= 112 for b in boxes)
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]


def test_pixels_match_the_scene():
    for row, image in make_rows("counting", 6, seed=11, size=112, variant="mix"):
        assert image.size == (112, 112) and image.mode == "RGB"
        for s in row["scene"]:
            assert image.getpixel(tuple(s["center"])) == COLOURS[s["colour"]]
        found = sorted(regions(image), key=lambda r: r[1])
        drawn = sorted(((COLOURS[s["colour"]], tuple(s["bbox"])) for s in row["scene"]), key=lambda r: r[1])
        assert found == drawn  # one region per shape, of its colour, exactly its box


@pytest.mark.parametrize("frame", ["normalized", "pixel"])
def test_grounding_gold_box_is_the_drawn_shape(frame):
    for row, image in make_rows("grounding", 8, seed=2, frame=frame, size=160):
        target = row["scene"][row["target"]]
        named = (row["target_colour"], row["target_shape"])
        same = [s for s in row["scene"] if (s["colour"], s["shape"]) == named]
        assert same == [target]
        assert f"the {row['target_colour']} {row['target_shape']} " in row["question"]
        box = json.loads(row["answer"])
        assert answer_tag(row["demo"]) == row["answer"]
        region = next(b for c, b in regions(image) if b[0] <= target["center"][0] < b[2]
                      and b[1] <= target["center"][1] < b[3])
        if frame == "pixel":
            assert "160x160" in row["question"] and box == list(region)
            assert iou(box, region) == 1.0
        else:
            assert "normalized to 0-1" in row["question"] and box == row["box"]
            assert box == [round(v / 160, 3) for v in region]
            assert iou([v * 160 for v in box], region) > 0.98


def _angle(at, p, q):
    u, v = np.subtract(p, at), np.subtract(q, at)
    return math.degrees(math.acos(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v)))


def test_geometry_answers_recomputed_from_given():
    rows = make_rows("geometry", 80, seed=4, sqrt_fraction=0.5)
    assert {r["kind"] for r, _ in rows} == {"angle", "isosceles", "exterior", "hypotenuse", "leg"}
    for row, _ in rows:
        g, v, kind = row["given"], row["vertices"], row["kind"]
        assert row["reward_type"] == "math" and answer_tag(row["demo"]) == row["answer"]
        for value in g.values():
            assert str(value) in row["question"]
        if kind in ("angle", "isosceles", "exterior"):
            truth = {"angle": lambda g=g: 180 - g["angle A"] - g["angle B"],
                     "isosceles": lambda g=g: (180 - g["angle C"]) / 2,
                     "exterior": lambda g=g: g["angle A"] + g["angle C"]}[kind]()
            assert row["answer"] == str(int(truth))
            drawn_b = 180 - _angle(v["B"], v["C"], v["D"]) if kind == "exterior" else None
            for name, value in g.items():  # the drawing has the stated angles (0.1 px rounding)
                assert abs(_angle(v[name[-1]], *[v[k] for k in "ABC" if k != name[-1]]) - value) < 1.0
            if drawn_b is not None:
                assert abs(drawn_b - (180 - truth)) < 1.0
        else:
            square = g["BC"] ** 2 + g["AC"] ** 2 if kind == "hypotenuse" else g["AB"] ** 2 - g["BC"] ** 2
            parsed = sympy.sympify(re.sub(r"\\sqrt\{(\d+)\}", r"*sqrt(\1)", row["answer"]).lstrip("*"))
            assert sympy.simplify(parsed - sympy.sqrt(square)) == 0
            assert abs(_angle(v["C"], v["A"], v["B"]) - 90) < 1.0


def test_radical_form():
    assert [radical(n) for n in (100, 50, 7, 72, 1)] == ["10", "5\\sqrt{2}", "\\sqrt{7}", "6\\sqrt{2}", "1"]


def test_geometry_numbers_only_in_image():
    for row, _ in make_rows("geometry", 20, seed=1, numbers_in_text=False):
        assert not re.search(r"\d", row["question"]) and row["numbers_in_text"] is False


@pytest.mark.parametrize("task", VISION)
def test_write_task_is_deterministic_and_loadable(task, tmp_path):
    paths = [write_task(task, 4, 7, tmp_path / d, split="test", size=96 if task != "geometry" else 112)
             for d in ("a", "b")]
    other = write_task(task, 4, 8, tmp_path / "c", split="test", size=96 if task != "geometry" else 112)
    rows = [json.loads(line) for line in paths[0].read_text().splitlines()]
    assert len(rows) == 4 and paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != other.read_bytes()
    for row in rows:
        assert {"id", "image", "question", "answer", "reward_type", "demo", "scene_text"} <= set(row)
        png = [(p.parent / row["image"]).read_bytes() for p in paths]
        assert png[0] == png[1] and png[0][:8] == b"\x89PNG\r\n\x1a\n"
        assert (other.parent / row["image"].replace("-s7-", "-s8-")).read_bytes() != png[0]
    loaded = load_examples(str(paths[0]), prompt_style=None)
    made = make_examples(task, 4, 7, split="test", size=96 if task != "geometry" else 112)
    for a, b in zip(loaded, made):
        assert (a.id, a.prompt, a.answer, a.demo, a.reward_type, a.meta) == \
               (b.id, b.prompt, b.answer, b.demo, b.reward_type, b.meta)
        assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))


@pytest.mark.parametrize("task", VISION)
def test_train_and_test_items_are_disjoint(task):
    train = make_rows(task, 40, 0, split="train", size=96 if task != "geometry" else 112)
    test = make_rows(task, 40, 0, split="test", size=96 if task != "geometry" else 112)
    assert all(split_of(r["key"]) == "train" for r, _ in train)
    assert all(split_of(r["key"]) == "test" for r, _ in test)
    assert not {r["key"] for r, _ in train} & {r["key"] for r, _ in test}


def test_bad_parameters_are_named():
    with pytest.raises(UnknownNameError, match="did you mean 'max_items'"):
        make_rows("counting", 1, 0, max_item=3)
    with pytest.raises(ConfigError, match="min_items=5 is larger than max_items=2"):
        make_rows("counting", 1, 0, min_items=5, max_items=2)
    with pytest.raises(ConfigError, match="kinds"):
        make_rows("geometry", 1, 0, kinds="angle,circle")
    with pytest.raises(ConfigError, match="variant"):
        make_rows("counting", 1, 0, variant="colours")
    with pytest.raises(UnknownNameError, match="counting parameter 'fewshot'"):
        make_rows("counting", 1, 0, fewshot=2)  # few-shot chat turns are a text-task option
    assert {r["kind"] for r, _ in make_rows("geometry", 5, 0, kinds="leg")} == {"leg"}
    assert [len(r["scene"]) for r, _ in make_rows("counting", 3, 0, min_items=2, max_items=2)] == [2, 2, 2]
    assert make_rows("counting", 1, 0, size="96")[0][1].size == (96, 96)

"""Text task `arithmetic`: small `a*b+c` questions (issue 8's CPU-scale task) and harder levels.

Level 1: a*b + c (a, b in 2-9, c in 1-20); level 2: a*b + c*d +/- e (more terms); level 3: a*b +/- c with
a in 11-99, c in 1-99 (larger numbers); `word=true` phrases any level as a multi-step word problem.
`max_constant` widens levels 1-2's constant range (1-20 by default; level 1's test split then holds
332 distinct items, at 50 about 830, which a 400-item evaluation set needs).
Demos are programmatic step-by-step solutions ending in \\boxed{N}; `style=prose` says the same steps in
other words, at about 1.6x the length, and draws the same items. Imports `duotune.tasks.base` only.
"""

from __future__ import annotations

import random
from typing import Any

from duotune.tasks.base import Candidate, Param, TaskSpec, register_task

NAMES = (("Tom", "He"), ("Anna", "She"), ("Ravi", "He"), ("Mia", "She"), ("Leo", "He"), ("Sara", "She"),
         ("Ken", "He"), ("Lena", "She"))
THINGS = ("apples", "marbles", "stickers", "pencils", "cookies", "cards", "shells", "stamps")
CONTAINERS = (("box", "boxes"), ("bag", "bags"), ("pack", "packs"), ("jar", "jars"), ("tray", "trays"))


def _draw_terms(rng: random.Random, level: int, max_constant: int = 20) -> tuple[list[tuple[int, int]], int]:
    """(products, signed constant) of one expression; its value is never negative."""
    while True:
        if level == 1:
            return [(rng.randint(2, 9), rng.randint(2, 9))], rng.randint(1, max_constant)
        if level == 2:
            products = [(rng.randint(2, 9), rng.randint(2, 9)) for _ in range(2)]
            const = rng.randint(1, max_constant) * rng.choice((1, -1))
        else:
            products = [(rng.randint(11, 99), rng.randint(2, 9))]
            const = rng.randint(1, 99) * rng.choice((1, -1))
        if sum(a * b for a, b in products) + const >= 0:
            return products, const


def expression_key(products: list[tuple[int, int]], const: int) -> str:
    """Canonical text of the expression, e.g. 'arith:7*8+13'; it decides the split and de-duplication,
    so the same numbers in expression and word form count as one item."""
    return "arith:" + "+".join(f"{a}*{b}" for a, b in products) + f"{const:+d}"


def _expression(products: list[tuple[int, int]], const: int) -> str:
    sign = "+" if const >= 0 else "-"
    return " + ".join(f"{a} * {b}" for a, b in products) + f" {sign} {abs(const)}"


def _steps(products: list[tuple[int, int]], const: int, units: list[str]) -> tuple[list[str], int]:
    """One sentence per operation, in order: each product, then the running sum, then the constant."""
    words = ["First", "Next", "Then", "Finally"]
    steps, values = [], []
    for (a, b), unit in zip(products, units):
        values.append(a * b)
        steps.append(f"{a} * {b} = {a * b}{unit}")
    total = values[0]
    for v in values[1:]:
        steps.append(f"{total} + {v} = {total + v}")
        total += v
    op = "+" if const >= 0 else "-"
    steps.append(f"{total} {op} {abs(const)} = {total + const}")
    labels = words[:len(steps) - 1] + [words[-1] if len(steps) > 2 else "Then"]
    return [f"{w}, {s}." for w, s in zip(labels, steps)], total + const


def _prose(products: list[tuple[int, int]], const: int, units: list[str], value: int) -> str:
    """The same operations as `_steps`, said in words (`style: prose`): other wording, about 1.6x longer."""
    op = "addition" if const >= 0 else "subtraction"
    parts = {2: "two", 4: "four"}[2 * len(products)]
    said = [f"Multiplication comes before {op}, so we work it out in {parts} parts."]
    values = []
    for (a, b), unit in zip(products, units):
        values.append(a * b)
        said.append(f"{a} times {b} is {a * b}{unit}.")
    total = values[0]
    for v in values[1:]:
        said.append(f"Adding {v} to {total} makes {total + v}.")
        total += v
    said.append(f"Adding {const} to {total} makes {value}." if const >= 0 else
                f"Taking {-const} away from {total} leaves {value}.")
    return " ".join(said) + f" So the result is {value}, and the answer is \\boxed{{{value}}}."


def _word_problem(rng: random.Random, products: list[tuple[int, int]], const: int) -> tuple[str, list[str]]:
    """A word problem for the expression, and the unit phrase each product's step gets in the demo."""
    name, pronoun = rng.choice(NAMES)
    thing = rng.choice(THINGS)
    containers = rng.sample(CONTAINERS, len(products))
    groups = [f"{a} {cs} with {b} {thing} in each {c}"
              for (a, b), (c, cs) in zip(products, containers)]
    units = [f" {thing} in the {cs}" for _, cs in containers]
    verb = f"gets {const} more" if const >= 0 else f"gives away {-const}"
    moved = thing[:-1] if abs(const) == 1 else thing  # "1 more apple", "3 more apples"
    question = (f"{name} has {' and '.join(groups)}. {pronoun} then {verb} {moved}. "
                f"How many {thing} does {name} have now?")
    return question, units


def draw_arithmetic(rng: random.Random, p: dict[str, Any]) -> Candidate:
    products, const = _draw_terms(rng, p["level"], p["max_constant"])
    if p["word"]:
        question, units = _word_problem(rng, products, const)
    else:
        question, units = f"What is {_expression(products, const)}?", [""] * len(products)
    steps, value = _steps(products, const, units)
    demo = (_prose(products, const, units, value) if p["style"] == "prose" else
            " ".join(steps) + f" The answer is \\boxed{{{value}}}.")
    row = {"question": question, "answer": str(value), "reward_type": "math", "demo": demo,
           "level": p["level"], "word": p["word"], "terms": [list(t) for t in products], "constant": const}
    return Candidate(row, expression_key(products, const))


register_task(TaskSpec(
    name="arithmetic",
    draw=draw_arithmetic,
    help="text: a*b+c questions (levels 1-3, optional word problems) with step-by-step \\boxed{} demos",
    params={
        "level": Param(1, "1: a*b+c (a, b in 2-9, c in 1-20); 2: a*b+c*d+/-e (more terms); "
                          "3: a*b+/-c with a in 11-99, c in 1-99 (larger numbers)", choices=(1, 2, 3)),
        "max_constant": Param(20, "levels 1-2: the constant is drawn from 1..max_constant (level 3 keeps "
                                  "1-99); widen it for more distinct items", low=1, high=1000),
        "word": Param(False, "phrase each question as a multi-step word problem instead of an expression"),
        "style": Param("steps", "demo wording: steps ('First, a * b = c. Then, ...'), or prose (the same "
                                "operations in other words, about 1.6x longer: regime (b)'s teacher data, "
                                "docs/protocol.md); the questions stay the same", choices=("steps", "prose")),
        "fewshot": Param(2, "worked examples (user/assistant turns) before each question; SmolLM2-135M needs "
                            "about 2 to write \\boxed{} at all (issue 8)", low=0, high=16),
    },
))

"""Benchmark registry (`benchmark`, `suite`): loaders for the shared eval files, prompt templates,
grading kind and default sampling (SPEC 8); `load_benchmark(name) -> list[Example]`.

Reads through `duotune.data.load_examples` (so bad rows name file and row); no torch, no models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from duotune.data import Example, apply_prompt_style, load_examples
from duotune.errors import ConfigError, DataError
from duotune.eval.mcq import Choice, choice_from_list, parse_options, render_mcq, shuffle_choice
from duotune.paths import data_dir
from duotune.registry import Registry
from duotune.rewards.final import check_mode

# GPQA rows open with this instruction; it is replaced by the shared MCQ template (mcq.MCQ_SUFFIX).
_GPQA_HEADER = "Answer the following multiple choice question."


@dataclass(frozen=True)
class Benchmark:
    """One evaluation set.

    file: path inside the shared data folder; kind: "math" (math-verify on the final answer) or
        "mcq" (option letter after the shuffle); n/temperature/top_p/max_new_tokens: default sampling
        (SPEC 8: T 0.6, top_p 1.0, up to 8192 new tokens; avg@32 for AIME and AMC); breakdown: meta
        fields the summary reports per value; read: rows of `file` -> Examples (before the prompt);
        extraction: how a math answer is read (`duotune.rewards.final_answer`): "lenient" by default
        for reports, "strict" to score as training does; MCQ items read the option letter
        (`normalize_mcq`) and have "letter".
    """

    name: str
    file: str
    kind: Literal["math", "mcq"]
    read: Callable[[str], list[Example]]
    n: int = 1
    temperature: float = 0.6
    top_p: float = 1.0
    max_new_tokens: int = 8192
    breakdown: tuple[str, ...] = ()
    help: str = ""
    extraction: str = "lenient"


benchmarks: Registry[Benchmark] = Registry("benchmark")
suites: Registry[tuple[str, ...]] = Registry("suite")


def _math_rows(fmt: str) -> Callable[[str], list[Example]]:
    def read(path: str) -> list[Example]:
        return load_examples(path, format=fmt)
    return read


def _aime25_rows(path: str) -> list[Example]:
    """The aime25 rows of LUFFY's eval mix: 30 problems x 32 repeats (for avg@32), kept once each."""
    out: dict[str, Example] = {}
    for ex in load_examples(path, format="verl"):
        if ex.meta.get("data_source") != "aime25":
            continue
        user = next(m["content"] for m in ex.prompt if m["role"] == "user")
        if user not in out:
            index = (ex.meta.get("extra_info") or {}).get("index", len(out))
            out[user] = replace(ex, id=f"aime25-{index}")
    return list(out.values())


def _verl_mcq_rows(path: str) -> list[Example]:
    """ARC-C / GPQA verl rows: the options live in the user text; parse them into meta["choice"]."""
    examples = load_examples(path, format="verl")
    for row, ex in enumerate(examples, start=1):
        user = next(m["content"] for m in ex.prompt if m["role"] == "user")
        if user.startswith(_GPQA_HEADER):
            user = user.split("\n\n", 1)[-1]  # drop the row's own answer-format instruction
        try:
            ex.meta["choice"] = parse_options(user, ex.answer or "")
        except DataError as e:
            raise _at_row(e, path, row) from None
    return examples


def _mmlu_pro_rows(path: str) -> list[Example]:
    """MMLU-Pro JSONL (question, options, answer letter, category): read as MATH-style rows, whose
    prompt is the bare question, then the options from meta."""
    examples = load_examples(path, format="math")
    for row, ex in enumerate(examples, start=1):
        question = ex.prompt[-1]["content"]
        for stale in ("answer_index", "cot_content"):  # the index changes with the shuffle; CoT is empty
            ex.meta.pop(stale, None)
        try:
            options = ex.meta.pop("options", None) or []
            ex.meta["choice"] = choice_from_list(question, options, ex.answer or "")
        except DataError as e:
            raise _at_row(e, path, row) from None
    return examples


def _at_row(err: DataError, path: str, row: int) -> DataError:
    """The same error, now naming the file and the 1-based row."""
    message = str(err).removeprefix(f"field {err.field!r}: " if err.field else "")
    return DataError(message, file=path, row=row, field=err.field)


def _register(name: str, file: str, kind: Literal["math", "mcq"], read: Callable[[str], list[Example]],
              help: str, **defaults: Any) -> None:
    extraction = defaults.pop("extraction", "lenient" if kind == "math" else "letter")
    bench = Benchmark(name, file, kind, read, help=help, extraction=extraction, **defaults)
    benchmarks.register(name, bench, help=f"{help} [extraction: {extraction}]")


def extraction_mode(name: str, override: str | None = None) -> str:
    """The extraction a run of benchmark `name` uses: `override` ("strict" | "lenient") for a math
    benchmark, else the benchmark's default; MCQ benchmarks always read the option letter."""
    bench = get_benchmark(name)
    if bench.kind != "math" or override is None:
        return bench.extraction
    return check_mode(override)


_register("gsm8k", "gsm8k/test.jsonl", "math", _math_rows("gsm8k"),
          "GSM8K test (1319): grade-school word problems, numeric answer")
_register("math500", "math500/test.jsonl", "math", _math_rows("math"),
          "MATH-500 (500): the PRM800K test split, by subject and level", breakdown=("subject", "level"))
_register("aime24", "aime24/test.jsonl", "math", _math_rows("math"),
          "AIME 2024 (30), avg@32", n=32)
_register("aime25", "luffy_math_eval/valid.all.parquet", "math", _aime25_rows,
          "AIME 2025 (30, from LUFFY's eval mix), avg@32", n=32)
_register("amc23", "amc23/test.jsonl", "math", _math_rows("math"),
          "AMC 2023 (40), avg@32", n=32)
_register("minerva", "minerva_math/test.jsonl", "math", _math_rows("math"),
          "Minerva OCW math (272): gold = last \\boxed{} of the solution", breakdown=("type",))
_register("olympiadbench", "olympiadbench/test.jsonl", "math", _math_rows("math"),
          "OlympiadBench math, English, open-ended (675)", breakdown=("subfield",))
_register("arc_c", "arc_challenge/valid.arc_c.parquet", "mcq", _verl_mcq_rows,
          "ARC-Challenge test (1172): 3-5 options, shuffled per item")
_register("gpqa_diamond", "gpqa_diamond/valid.gpqa.parquet", "mcq", _verl_mcq_rows,
          "GPQA-Diamond (198): 4 options, shuffled per item; never print its rows")
_register("mmlu_pro", "mmlu_pro/test.jsonl", "mcq", _mmlu_pro_rows,
          "MMLU-Pro test (12030): up to 10 options, shuffled per item", breakdown=("category",))

suites.register("math_id", ("aime24", "amc23", "math500", "minerva", "olympiadbench"),
                help="SRFT's five in-distribution math sets")
suites.register("ood", ("arc_c", "gpqa_diamond", "mmlu_pro"), help="out-of-distribution MCQ sets")
suites.register("all", tuple(benchmarks.names()), help="every registered benchmark")


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark; an unknown name lists the valid ones."""
    return benchmarks.get(name)


def resolve_benchmarks(names: str | list[str] | None = None, suite: str | None = None) -> list[str]:
    """Benchmark names from a comma list and/or a suite, de-duplicated in order, each validated."""
    items = names.split(",") if isinstance(names, str) else list(names or [])
    out = [n.strip() for n in items if n.strip()] + (list(suites.get(suite)) if suite else [])
    if not out:
        raise ConfigError(f"no benchmarks given; pass --benchmarks (one of {', '.join(benchmarks.names())}) "
                          f"or --suite ({', '.join(suites.names())})")
    for name in out:
        benchmarks.validate(name)
    return list(dict.fromkeys(out))


def load_benchmark(name: str, *, limit: int | None = None, seed: int = 0,
                   prompt_style: str | None = None) -> list[Example]:
    """The benchmark's items as `Example`s ready to sample: math prompts get the "boxed" style (or
    `prompt_style`); MCQ options are shuffled with key "seed:name:item id" (meta: mcq_permutation,
    mcq_seed, options, original_answer) and the gold answer is the letter after the shuffle."""
    bench = get_benchmark(name)
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of items (got {limit})")
    path = data_dir() / bench.file
    if not path.is_file():
        raise DataError(f"benchmark {name!r} needs this file; check $DUOTUNE_DATA "
                        "(see ../shared/data/README.md)", file=str(path))
    examples = bench.read(str(path))[:limit]
    return [_as_mcq(ex, name, seed, prompt_style) if bench.kind == "mcq"
            else _as_math(ex, prompt_style) for ex in examples]


def _as_math(ex: Example, prompt_style: str | None) -> Example:
    return replace(ex, prompt=apply_prompt_style(ex.prompt, prompt_style or "boxed"), demo=None,
                   reward_type="math")


def _as_mcq(ex: Example, name: str, seed: int, prompt_style: str | None) -> Example:
    meta = dict(ex.meta)
    choice: Choice = meta.pop("choice")
    shuffled, perm = shuffle_choice(choice, f"{seed}:{name}:{ex.id}")
    prompt = [{"role": "user", "content": render_mcq(shuffled)}]
    if prompt_style is not None:
        prompt = apply_prompt_style(prompt, prompt_style)
    meta.update(mcq_permutation=perm, mcq_seed=seed, options=list(shuffled.options),
                original_answer=choice.answer_letter)
    return replace(ex, prompt=prompt, answer=shuffled.answer_letter, demo=None, reward_type="mcq", meta=meta)

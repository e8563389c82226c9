"""Every CLI subcommand's --help names everything it accepts (issue 18, item 7): each flag with a help
text and its default, each config field of the commands that take a config (train, compare, pipeline
run) and each task parameter of `data make`; the demo's flags too."""

from __future__ import annotations

import argparse

import pytest

from duotune.analysis.compare_config import CompareConfig
from duotune.cli import build_parser
from duotune.config import describe_fields
from duotune.pipeline.config import ClientConfig, PipelineConfig
from duotune.trainers import TrainConfig

# The commands that read a config file + key=value overrides, and the fields their help must list.
CONFIG_FIELDS = {
    ("train",): describe_fields(TrainConfig),
    ("compare",): describe_fields(CompareConfig),
    ("pipeline", "run"): describe_fields(PipelineConfig) + describe_fields(ClientConfig, prefix="clients.NAME."),
}


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(path, parser) of every parser below `parser` that has no subcommands of its own."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, child in action.choices.items():
            yield from _commands(child, (*path, name))


def _flags_documented(path, parser: argparse.ArgumentParser) -> None:
    text = parser.format_help()
    shows_defaults = issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        name = action.option_strings[0] if action.option_strings else (action.metavar or action.dest)
        assert name in text, (path, name)
        assert action.help and action.help.strip(), f"{' '.join(path)} {name} has no help"
        if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            assert shows_defaults or "%(default)" in action.help, f"{' '.join(path)} {name}: default not shown"


PARSER = build_parser(with_train_fields=True)
COMMANDS = dict(_commands(PARSER))


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_flag_has_help_and_shows_its_default(path):
    _flags_documented(path, COMMANDS[path])


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_commands_that_take_a_config_list_every_field_with_help_and_default(path):
    parser = COMMANDS[path]
    takes_overrides = any(a.dest == "overrides" for a in parser._actions)
    assert takes_overrides == (path in CONFIG_FIELDS), f"{' '.join(path)}: add its config to CONFIG_FIELDS"
    if not takes_overrides:
        return
    text = parser.format_help()
    for key, default, desc in CONFIG_FIELDS[path]:
        assert desc.strip(), f"{key} has no description"
        assert f"  {key}  " in text or f"  {key} " in text, f"{' '.join(path)} --help does not list {key}"
        assert f"[default: {default}]" in text, key


def test_data_make_help_lists_every_task_parameter():
    from duotune.tasks import task_params, tasks

    text = COMMANDS[("data", "make")].format_help()
    for task in tasks.names():
        assert f"  {task}:" in text
        for name, param in task_params(task).items():
            assert f"    {name}  {param.help} [default: {param.default!r}]" in text


def test_prompt_style_help_names_every_registered_style():
    from duotune.data.templates import prompt_styles

    (desc,) = [d for k, _, d in describe_fields(TrainConfig) if k == "data.prompt_style"]
    assert all(style in desc for style in prompt_styles.names()) and len(prompt_styles.names()) == 5


@pytest.mark.parametrize("module", ["duotune.demo", "duotune.demo_gsm8k"])
def test_demo_flags_have_help_and_defaults(module):
    import importlib

    _flags_documented((module,), importlib.import_module(module)._parser())

"""Config plumbing and registry: unknown keys/names fail with one line naming them and the fix."""

import pytest
from pydantic import Field

from duotune.config import Cfg, RegistryName, apply_overrides, describe_fields, load_config, save_config
from duotune.errors import ConfigError, UnknownNameError
from duotune.registry import Registry

METHODS = Registry("test_method")
METHODS.register("grpo", object(), help="group relative policy optimisation")
METHODS.register("srft", object(), help="single-stage SFT + RL")


class Optim(Cfg):
    lr: float = Field(1e-6, description="learning rate")


class Top(Cfg):
    method: RegistryName(METHODS) = Field("grpo", description="training method")
    optim: Optim = Field(default_factory=Optim)
    steps: int = Field(10, description="optimizer steps")


def test_overrides_parse_yaml_values():
    cfg = load_config(Top, None, ["optim.lr=3e-5", "steps=4", "method=srft"])
    assert cfg.optim.lr == pytest.approx(3e-5) and cfg.steps == 4 and cfg.method == "srft"


def test_yaml_file_then_overrides(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("steps: 7\noptim:\n  lr: 0.5\n")
    cfg = load_config(Top, p, ["steps=9"])
    assert (cfg.steps, cfg.optim.lr) == (9, 0.5)
    out = tmp_path / "resolved.yaml"
    save_config(cfg, out)
    assert load_config(Top, out) == cfg


def test_two_writers_of_one_config_file_never_rename_each_others_temporary_file(tmp_path):
    """Two demo workers save the comparison's compare.yaml at once: with one shared temporary name, the
    first rename took the file the second was about to rename (FileNotFoundError), and the worker died
    (CI, session 12: `worker 0 (base, srft) exited with 1`)."""
    from concurrent.futures import ThreadPoolExecutor

    out = tmp_path / "compare.yaml"
    cfgs = [load_config(Top, None, [f"steps={k}"]) for k in (1, 2)]

    def write(cfg: Top) -> None:
        for _ in range(300):
            save_config(cfg, out)

    with ThreadPoolExecutor(2) as pool:
        for f in [pool.submit(write, c) for c in cfgs]:
            f.result()  # re-raises a writer's error
    assert load_config(Top, out) in cfgs and [p.name for p in tmp_path.iterdir()] == ["compare.yaml"]


@pytest.mark.parametrize("override, expected", [
    ("metod=grpo", "unknown key 'metod'; valid keys here: method, optim, steps (did you mean 'method'?)"),
    ("optim.lrr=1", "unknown key 'optim.lrr'; valid keys here: lr (did you mean 'lr'?)"),
    ("method=srtf", "method: unknown test_method 'srtf'; valid: grpo, srft (did you mean 'srft'?)"),
])
def test_errors_name_key_choices_and_closest(override, expected):
    with pytest.raises(ConfigError) as e:
        load_config(Top, None, [override])
    assert str(e.value) == f"config: {expected}"
    assert "\n" not in str(e.value)


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["steps"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Top, tmp_path / "nope.yaml")


def test_registry_unknown_name_lists_choices():
    with pytest.raises(UnknownNameError) as e:
        METHODS.get("grp")
    assert str(e.value) == "unknown test_method 'grp'; valid: grpo, srft (did you mean 'grpo'?)"
    assert METHODS.describe("srft") == "single-stage SFT + RL"


def test_describe_fields_recurses_with_descriptions():
    rows = describe_fields(Top)
    assert ("optim.lr", "1e-06", "learning rate") in rows
    assert [r[0] for r in rows] == ["method", "optim.lr", "steps"]


def test_unregister_removes_the_name():
    reg = Registry("test_tmp_kind")
    reg.register("a", object())
    reg.unregister("a")
    assert "a" not in reg and reg.names() == []
    with pytest.raises(UnknownNameError):
        reg.unregister("a")

"""The comparison report (issue 18, item 4) from hand-made results: accuracy in % with 95 % Wilson
intervals (closed form), one colour per method in every plot, the base model as a reference line and
not a method, per-method panels only for methods that ran, tables rendered as HTML tables; and the
page laid out by a real headless browser (Chromium) without anything running off a 1400-px window."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from duotune.analysis import plots
from duotune.analysis.compare_config import CompareConfig
from duotune.analysis.intervals import Z95, wilson_interval
from duotune.analysis.report import write_report

ROOT = Path(__file__).resolve().parents[1]


def test_wilson_interval_closed_form():
    # 0 of 10: the interval is [0, z^2 / (n + z^2)]; 45 of 100 by the formula worked by hand
    assert wilson_interval(0.0, 10) == pytest.approx((0.0, Z95 ** 2 / (10 + Z95 ** 2)))
    lo, hi = wilson_interval(0.45, 100)
    centre = (0.45 + Z95 ** 2 / 200) / (1 + Z95 ** 2 / 100)
    half = Z95 / (1 + Z95 ** 2 / 100) * math.sqrt(0.45 * 0.55 / 100 + Z95 ** 2 / 40000)
    assert (lo, hi) == pytest.approx((centre - half, centre + half))
    assert (lo, hi) == pytest.approx((0.35615, 0.54755), abs=5e-5)  # the usual table value
    assert wilson_interval(1.0, 20, percent=True)[1] == 100.0
    with pytest.raises(ValueError, match="n >= 1"):
        wilson_interval(0.5, 0)


def _run(root: Path, method: str, accs: list[float], beta: bool = False) -> dict:
    run_dir = root / "runs" / f"{method}-s0"
    run_dir.mkdir(parents=True)
    recs = [{"step": s, "reward/mean": 0.1 * s, "entropy/mean": 1.0 / s, "completion/len_mean": 30.0,
             **({"kl/mean": 0.01, "kl/beta": 0.04} if beta else {}),
             **({"srft/w_sft": 0.4, "srft/w_rl": 0.6} if method == "srft" else {})} for s in (1, 2)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    curve = [{"step": s, "wall_s": 10.0 * s, "kl_to_initial": 0.001 * s,
              "evals": {"arith": {"accuracy": a, "items": 100.0}}} for s, a in zip((0, 2), accs)]
    res = {"method": method, "seed": 0, "status": "done", "curve": curve, "run_dir": str(run_dir),
           "budget": {"steps": 2}}
    (root / "results").mkdir(exist_ok=True)
    (root / "results" / f"{method}-s0.json").write_text(json.dumps(res))
    return res


@pytest.fixture
def report(tmp_path):
    cfg = CompareConfig.model_validate({
        "name": "r", "output_dir": str(tmp_path), "methods": ["base", "sft", "grpo", "srft"],
        "data": {"generate": {"n": 4}}, "budget": {"steps": 2, "prompts_per_step": 2, "samples_per_prompt": 4},
        "eval_sets": [{"name": "arith", "generate": {"n": 100, "split": "test"}}], "eval": {"every": 2}})
    root = tmp_path / "r"
    _run(root, "base", [0.45])
    _run(root, "sft", [0.45, 0.80])
    _run(root, "grpo", [0.45, 0.65], beta=True)
    _run(root, "srft", [0.45, 0.70])
    return cfg, root


def test_plots_use_one_colour_per_method_a_base_reference_and_per_method_panels(report, monkeypatch):
    cfg, root = report
    drawn = {}
    real = plots.line_plot

    def spy(series, title, xlabel, ylabel, out, **kw):
        drawn[Path(out).stem] = (series, kw)
        return real(series, title, xlabel, ylabel, out, **kw)

    monkeypatch.setattr(plots, "line_plot", spy)
    write_report(root, cfg)
    series, kw = drawn["accuracy_arith_vs_steps"]
    assert set(series) == {"sft", "grpo", "srft"}  # base is the reference line, not a method
    assert kw["reference"] == ("base (initial model): 45.0 %", 45.0)
    assert series["sft"] == ([0, 2], [45.0, 80.0])  # in %
    assert kw["bands"]["sft"][0][1] == pytest.approx(wilson_interval(0.8, 100, percent=True)[0])
    for stem, (series, kw) in drawn.items():  # the same colour for a method in every figure
        for label in series:
            assert kw["colors"][label] == plots.method_color(label.split()[0]), (stem, label)
    assert plots.method_color("srft") == "C3" and plots.method_color("grpo") == "C1"
    assert set(drawn["srft_weights"][0]) == {"srft srft/w_sft", "srft srft/w_rl"}
    # grpo logs a constant beta, but there is no GRPO-D run: no schedule panel
    assert drawn["grpo_d_beta"][0] == {} and not (root / "plots" / "grpo_d_beta.png").exists()


def test_training_plots_read_the_logs_in_the_comparison_folder_wherever_it_ran(report, monkeypatch):
    """A result records the run folder as it was where it ran (a relative path, or another machine's);
    restored from the store (studies.store) the log lies under <folder>/runs/<method>-s<seed>."""
    import shutil

    cfg, root = report
    moved = root.with_name("restored")
    shutil.copytree(root, moved)
    shutil.rmtree(root)  # the folder the results name is gone
    drawn = {}

    def spy(series, title, xlabel, ylabel, out, **kw):
        drawn[Path(out).stem] = series

    monkeypatch.setattr(plots, "line_plot", spy)
    write_report(moved, cfg.model_copy(update={"name": "restored"}))
    assert set(drawn["reward"]) == {"sft", "grpo", "srft"}
    assert drawn["reward"]["sft"] == ([1, 2], [0.1, 0.2])


def test_report_tables_are_html_tables_with_intervals(report):
    cfg, root = report
    write_report(root, cfg)
    md = (root / "report.md").read_text()
    lo, hi = wilson_interval(0.8, 100, percent=True)
    assert f"| sft | 80.0 [{lo:.1f}, {hi:.1f}] | 80.0 |" in md
    html = (root / "report.html").read_text()
    assert html.count("<table>") == 2 and "<pre>" not in html and "|---|" not in html
    assert f"<td>80.0 [{lo:.1f}, {hi:.1f}]</td>" in html


def test_a_report_on_fewer_seeds_than_configured_says_its_verdicts_are_provisional(report):
    """The protocol's report on seeds 0-1 of [0, 1, 2] printed "held" / "did not hold" with nothing to
    say the protocol's seeds were not all in."""
    cfg, root = report
    out = write_report(root, cfg)
    assert out["missing"] == [] and "provisional" not in (root / "report.md").read_text()
    more = cfg.model_copy(update={"seeds": [0, 1]})
    out = write_report(root, more)
    assert out["missing"] == ["base-s1", "sft-s1", "grpo-s1", "srft-s1"]
    md = (root / "report.md").read_text()
    assert "**Incomplete: 4 of 8 runs are not finished (base-s1, sft-s1, grpo-s1, srft-s1)" in md
    assert "every verdict below is provisional" in md


def _screenshot_module():
    spec = importlib.util.spec_from_file_location("report_screenshot", ROOT / "docs" / "report_screenshot.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_report_lays_out_in_a_real_browser_within_1400_px(report, tmp_path):
    shot = _screenshot_module()
    if shot.chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    cfg, root = report
    out = write_report(root, cfg)
    found = shot.layout(root / "report.html", width=1400)
    assert found["overflow"] == [] and found["page_width"] <= 1400
    assert [t["rows"] for t in found["tables"]] == [5, 4]  # header + 4 methods; header + 3 methods
    assert found["images"] == len(out["plots"])  # every inlined PNG decoded
    png = shot.screenshot(root / "report.html", tmp_path / "shot.png", width=1400, height=900)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dynamics_pairs_each_checkpoint_with_its_training_step(tmp_path):
    """H3 / H7 by hand: late entropy averages the steps after 2/3 of the budget; each evaluated step
    > 0 is paired with that step's record; SRFT above GRPO in each of 3 seeds gives p = 1/20 (held)."""
    from duotune.analysis.report import dynamics

    cfg = CompareConfig.model_validate({
        "name": "d", "output_dir": str(tmp_path), "methods": ["base", "grpo", "srft"], "seeds": [0, 1, 2],
        "data": {"generate": {"n": 4}}, "budget": {"steps": 6, "prompts_per_step": 2, "samples_per_prompt": 4},
        "eval_sets": [{"name": "arith", "generate": {"n": 100, "split": "test"}}], "eval": {"every": 3}})
    root, results = tmp_path / "d", []
    for method, ent in (("grpo", 0.1), ("srft", 0.5)):
        for seed in (0, 1, 2):
            run_dir = root / "runs" / f"{method}-s{seed}"
            run_dir.mkdir(parents=True)
            recs = [{"step": s, "entropy/on_policy": ent + (1.0 if s <= 4 else 0.01 * seed), "reward/mean": 0.1 * s,
                     "completion/len_mean": 40.0 - s} for s in range(1, 7)]
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
            results.append({"method": method, "seed": seed, "status": "done", "curve": [
                {"step": s, "wall_s": s, "evals": {"arith": {"accuracy": a}}}
                for s, a in ((0, 0.4), (3, 0.5 + 0.01 * seed), (6, 0.6 + 0.01 * seed))]})
    d = dynamics(results, cfg, root)
    # steps 5 and 6 are the last third of 6: entropy ent + 0.01 seed, the 1.0 of steps <= 4 left out
    assert d["late_entropy"]["srft"] == pytest.approx([0.5, 0.51, 0.52])
    assert d["late_entropy"]["grpo"] == pytest.approx([0.1, 0.11, 0.12])
    assert d["entropy_test"] == {"a": "srft", "b": "grpo", "p": pytest.approx(0.05), "verdict": "held"}
    # 12 checkpoints (2 methods x 3 seeds x steps 3, 6): reward 0.3 / 0.6 rises with accuracy everywhere
    rew, length = d["tracking"]["reward/mean"], d["tracking"]["completion/len_mean"]
    assert rew["n"] == length["n"] == 12
    assert rew["rho"] > 0.8 and rew["verdict"] == "did not hold"  # the reward does track the score here
    assert length["rho"] == pytest.approx(-rew["rho"])  # length = 40 - step: the mirror image

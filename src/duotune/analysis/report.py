"""The comparison report: results.json (per method: final and best accuracy per eval set, mean and
spread over seeds, 95 % intervals (bootstrap over items and seeds; Wilson where per-item scores are
missing), paired differences between methods on the same items, budget, failures), the time-to-accuracy table and SFT->GRPO /
SRFT ratio (`analysis.time_to_accuracy`), report.md, PNG plots and a self-contained report.html (tables
rendered by markdown-it-py, base64 PNGs). Reads the comparison folder only (results/*.json, run
folders' metrics.jsonl); imports matplotlib and markdown-it-py, no torch.
"""

from __future__ import annotations

import base64
import html
import json
import statistics
from pathlib import Path
from typing import Any

from duotune.analysis.compare_config import CompareConfig
from duotune.analysis.intervals import (
    bootstrap_interval,
    paired_bootstrap,
    permutation_greater,
    spearman_interval,
    verdict,
    wilson_interval,
)
from duotune.analysis.plots import accuracy_plots, interval_plot, mean_by_step, read_metrics, training_plots
from duotune.analysis.time_to_accuracy import (
    CurvePoint,
    default_target,
    fraction_target,
    ratio_interval,
    seed_time,
    time_to_accuracy_table,
)

SRFT_SPEEDUP = 2.28  # SRFT's claimed SFT->RL / SRFT time-to-accuracy ratio (SPEC; docs/protocol.md, H2)


def collect(root: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((root / "results").glob("*.json"))]


def _spread(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "per_seed": values}


def summarize(results: list[dict[str, Any]], cfg: CompareConfig) -> dict[str, dict[str, Any]]:
    """{method: {status, seeds, final/best: {set: mean, std, per_seed}, budget, errors}} in cfg order."""
    out: dict[str, dict[str, Any]] = {}
    for method in cfg.methods:
        runs = [r for r in results if r["method"] == method and r["seed"] in cfg.seeds]
        done = [r for r in runs if r["status"] == "done"]
        entry: dict[str, Any] = {"status": "failed" if any(r["status"] == "failed" for r in runs)
                                 else ("done" if done else "missing"),
                                 "seeds": sorted(r["seed"] for r in done),
                                 "errors": {str(r["seed"]): r["error"] for r in runs if r["status"] == "failed"},
                                 "budget": next((r.get("budget") for r in runs if r.get("budget")), None)}
        for kind, pick in (("final", lambda c, s: c[-1]["evals"][s]["accuracy"]),
                           ("best", lambda c, s: max(p["evals"][s]["accuracy"] for p in c))):
            entry[kind] = {s.name: _spread([pick(r["curve"], s.name) for r in done])
                           for s in cfg.eval_sets if done}
        entry["items"] = {s.name: int(done[0]["curve"][-1]["evals"][s.name].get("items", 0))
                          for s in cfg.eval_sets if done and s.name in done[0]["curve"][-1]["evals"]}
        items = {s.name: _per_item(done, s.name) for s in cfg.eval_sets}
        entry["ci95"] = {name: list(bootstrap_interval(x)[1:]) for name, x in items.items() if x}
        if done:
            entry["train_wall_s"] = statistics.fmean(r["curve"][-1]["wall_s"] for r in done)
            entry["eval_wall_s"] = statistics.fmean(sum(p.get("eval_wall_s", 0.0) for p in r["curve"])
                                                    for r in done)
        out[method] = entry
    return out


def _per_item(runs: list[dict[str, Any]], set_name: str) -> list[list[float]] | None:
    """Seeds x items: the last point's per-item scores on `set_name`, or None when a run lacks them
    (results written before they were kept)."""
    rows = [r["curve"][-1]["evals"].get(set_name, {}).get("per_item") for r in runs]
    return rows if rows and all(rows) else None


def paired(results: list[dict[str, Any]], cfg: CompareConfig) -> list[dict[str, Any]]:
    """`cfg.pairs` (default: every trained method against base) on every eval set: A - B on the same
    items, its 95 % bootstrap interval over items and seeds and the verdict on "A > B"."""
    done = [r for r in results if r["status"] == "done" and r["seed"] in cfg.seeds]
    pairs = [p for p in cfg.pairs if set(p) <= set(cfg.methods)] or \
        [(m, "base") for m in cfg.methods if m != "base"]
    out = []
    for a, b in pairs:
        for s in cfg.eval_sets:
            xa = _per_item([r for r in done if r["method"] == a], s.name)
            xb = _per_item([r for r in done if r["method"] == b], s.name)
            if xa and xb:
                out.append({"a": a, "b": b, "eval_set": s.name, **paired_bootstrap(xa, xb)})
    return out


def claim_verdict(low: float, high: float, censored: list[str], claim: float) -> str:
    """"numerator / denominator >= claim" from the ratio's interval. A censored numerator (a run never
    reached the target) makes the ratio a lower bound, so only `held` can be read; a censored
    denominator makes it an upper bound, so only `did not hold`; both: inconclusive."""
    v = verdict(low - claim, high - claim)
    if v == "held" and "denominator" in censored or v == "did not hold" and "numerator" in censored:
        return "inconclusive"
    return v


def seed_targets(results: list[dict[str, Any]], cfg: CompareConfig) -> list[dict[str, Any]]:
    """Per `cfg.target_fractions` target: each trained method's training seconds to it, seed by seed
    (censored at the run's end when never reached), and the ratio[0] / ratio[1] ratio of mean times with
    its bootstrap interval over seeds. [] when base or ratio[0] has no result, or ratio[0] ends at or
    below base (no target lies between them)."""
    main = cfg.main_set()
    done = [r for r in results if r["status"] == "done" and r["seed"] in cfg.seeds]

    def acc(r: dict[str, Any], point: int) -> float:
        return r["curve"][point]["evals"][main]["accuracy"]

    base = [acc(r, 0) for r in done if r["method"] == "base"]
    ref = [acc(r, -1) for r in done if r["method"] == cfg.ratio[0]]
    if not base or not ref or statistics.fmean(ref) <= statistics.fmean(base):
        return []
    out = []
    for f in cfg.target_fractions:
        target = fraction_target(statistics.fmean(base), statistics.fmean(ref), f)
        times = {m: [seed_time([CurvePoint(p["step"], p["wall_s"], p["evals"][main]["accuracy"])
                                for p in r["curve"]], target) for r in done if r["method"] == m]
                 for m in cfg.methods if m != "base"}
        entry: dict[str, Any] = {"fraction": f, "target": target, "eval_set": main, "methods": {
            m: {"reached": sum(t.reached for t in ts), "seeds": len(ts),
                "mean_wall_s": statistics.fmean(t.wall_s for t in ts)} for m, ts in times.items() if ts}}
        num, den = times.get(cfg.ratio[0]), times.get(cfg.ratio[1])
        if num and den and all(t.wall_s > 0 for t in den):
            r = ratio_interval(num, den)
            entry["ratio"] = {"numerator": cfg.ratio[0], "denominator": cfg.ratio[1], **r}
            if tuple(cfg.ratio) == ("sft_then_grpo", "srft"):
                entry["ratio"]["claim"] = SRFT_SPEEDUP
                entry["ratio"]["verdict"] = claim_verdict(r["low"], r["high"], r["censored"], SRFT_SPEEDUP)
        out.append(entry)
    return out


def dynamics(results: list[dict[str, Any]], cfg: CompareConfig, root: Path) -> dict[str, Any]:
    """The training signal against the benchmark (docs/protocol.md): each method's on-policy entropy
    over the last third of its steps, seed by seed, with SRFT vs GRPO's exact permutation test (H3); and
    Spearman's rho over checkpoints (every trained run's evaluated steps) between the training step's
    mean response length, and its training reward, and accuracy on the main set (H7)."""
    main = cfg.main_set()
    done = [r for r in results if r["status"] == "done" and r["seed"] in cfg.seeds and r["method"] != "base"]
    entropy: dict[str, list[float]] = {}
    pairs: dict[str, tuple[list[float], list[float]]] = {"completion/len_mean": ([], []), "reward/mean": ([], [])}
    for r in done:
        recs = read_metrics(root / "runs" / f"{r['method']}-s{r['seed']}")
        late = [x["entropy/on_policy"] for x in recs if "entropy/on_policy" in x
                and x["step"] > 2 * cfg.budget.steps / 3]
        if late:
            entropy.setdefault(r["method"], []).append(statistics.fmean(late))
        by_step = {x["step"]: x for x in recs}
        for p in r["curve"]:
            rec = by_step.get(p["step"], {})
            for key, (xs, ys) in pairs.items():
                if p["step"] > 0 and isinstance(rec.get(key), (int, float)) and main in p["evals"]:
                    xs.append(float(rec[key]))
                    ys.append(p["evals"][main]["accuracy"])
    out: dict[str, Any] = {"late_entropy": entropy, "eval_set": main}
    if "srft" in entropy and "grpo" in entropy:
        p_hi = permutation_greater(entropy["srft"], entropy["grpo"])
        p_lo = permutation_greater(entropy["grpo"], entropy["srft"])
        out["entropy_test"] = {"a": "srft", "b": "grpo", "p": p_hi,
                               "verdict": "held" if p_hi <= 0.05 else "did not hold" if p_lo <= 0.05
                               else "inconclusive"}
    out["tracking"] = {}
    for key, (xs, ys) in pairs.items():
        if len(xs) >= 3:  # the claim is "does not track": it holds when the interval of rho contains 0
            rho = spearman_interval(xs, ys)
            out["tracking"][key] = {**rho, "verdict": "held" if rho["low"] <= 0 <= rho["high"] else "did not hold"}
    return out


def mean_curves(results: list[dict[str, Any]], set_name: str) -> dict[str, list[CurvePoint]]:
    """Per method: accuracy and wall time averaged over seeds at each evaluated step."""
    done = [r for r in results if r["status"] == "done"]
    return {m: [CurvePoint(*p) for p in pts] for m, pts in mean_by_step(done, set_name).items()}


def missing_runs(results: list[dict[str, Any]], cfg: CompareConfig) -> list[str]:
    """`<method>-s<seed>` of every configured run without a finished result (method by method)."""
    done = {(r["method"], r["seed"]) for r in results if r["status"] == "done"}
    return [f"{m}-s{s}" for m in cfg.methods for s in cfg.seeds if (m, s) not in done]


def write_report(root: Path, cfg: CompareConfig) -> dict[str, Any]:
    """Write results.json, report.md, plots/*.png and report.html into `root`; return the results."""
    results = collect(root)
    done = [r for r in results if r["status"] == "done" and r["method"] in cfg.methods]
    main = cfg.main_set()
    curves = {m: c for m, c in mean_curves(done, main).items() if m != "base"}
    tta = None
    if curves:
        target = cfg.target_accuracy if cfg.target_accuracy is not None else \
            default_target(curves, reference=cfg.ratio[0])
        tta = {"eval_set": main, **time_to_accuracy_table(curves, target, *cfg.ratio)}
    plots_dir = root / "plots"
    plots = accuracy_plots(done, [s.name for s in cfg.eval_sets], plots_dir) + \
        training_plots([r for r in done if r["method"] != "base"], root, plots_dir)
    from duotune.analysis.dynamics_map import plot_map

    if len(cfg.map.references) >= 2:
        seed0 = [r for r in done if r["seed"] == cfg.seeds[0]]
        plots.append(plot_map({r["method"]: r["curve"] for r in seed0}, tuple(cfg.map.references[:2]),
                              plots_dir / "dynamics_map.png"))
    summary = summarize(results, cfg)
    plots += [p for p in (interval_plot(summary, s.name, plots_dir / f"intervals_{s.name}.png") for s in cfg.eval_sets)
              if p is not None]
    out = {"name": cfg.name, "config": cfg.model_dump(mode="json"), "main_set": main,
           "methods": summary, "failed": [m for m, e in summary.items() if e["status"] == "failed"],
           "missing": missing_runs(results, cfg),
           "time_to_accuracy": tta, "seed_targets": seed_targets(results, cfg), "paired": paired(results, cfg),
           "dynamics": dynamics(results, cfg, root),
           "plots": [str(p.relative_to(root)) for p in plots],
           "curves": {f"{r['method']}-s{r['seed']}": r["curve"] for r in done}}
    (root / "results.json").write_text(json.dumps(out, indent=2) + "\n")
    md = markdown(out, cfg)
    (root / "report.md").write_text(md)
    (root / "report.html").write_text(html_page(md, root, out["plots"], cfg.name))
    return out


def _cell(s: dict[str, Any] | None, items: int = 0, ci: list[float] | None = None) -> str:
    """'80.0 [71.1, 86.7]': accuracy in % (mean ± sd when several seeds) and its 95 % interval: `ci`
    (the bootstrap over items and seeds) when given, else Wilson over the `items` held-out items (left
    out when unknown)."""
    if not s:
        return "-"
    spread = f" ± {100 * s['std']:.1f}" if len(s["per_seed"]) > 1 else ""
    if ci is None and not items:
        return f"{100 * s['mean']:.1f}{spread}"
    lo, hi = (100 * ci[0], 100 * ci[1]) if ci else wilson_interval(min(1.0, max(0.0, s["mean"])), items,
                                                                   percent=True)
    return f"{100 * s['mean']:.1f}{spread} [{lo:.1f}, {hi:.1f}]"


def markdown(res: dict[str, Any], cfg: CompareConfig) -> str:
    """Methods x eval sets (final accuracy %, mean ± sd over seeds), time-to-accuracy, failures."""
    sets = [(s.name, s.distribution) for s in cfg.eval_sets]
    b = cfg.budget
    lines = [f"# Comparison `{cfg.name}`", "",
             f"Model `{cfg.model}`; budget {b.steps} steps x {b.prompts_per_step} prompts (G = "
             f"{b.samples_per_prompt}, {b.updates_per_step} update/step); eval every {cfg.eval.every} steps, "
             f"T = {cfg.eval.temperature}, n = {cfg.eval.n}, {cfg.eval.max_new_tokens} new tokens; seeds "
             f"{cfg.seeds}. Accuracy in % at the last step (mean ± sd over seeds when there are several) "
             "with its 95 % interval in brackets (percentile bootstrap over the items and the seeds where "
             "per-item scores were kept, else Wilson over the items); `best` is the best evaluated point.", "",
             *([f"**Incomplete: {len(res['missing'])} of {len(cfg.methods) * len(cfg.seeds)} runs are not "
                f"finished ({', '.join(res['missing'])}), so every verdict below is provisional**: it "
                "is read off the seeds that are in, not all those configured.", ""] if res.get("missing") else []),
             "| method | " + " | ".join(f"{n} ({'ID' if d == 'in' else 'OOD'}) | best" for n, d in sets)
             + " | seeds | train s | status |",
             "|---|" + "---|" * (2 * len(sets) + 3)]
    for m, e in res["methods"].items():
        cells = [f"{_cell(e['final'].get(n), e.get('items', {}).get(n, 0), e.get('ci95', {}).get(n))} | "
                 f"{_cell(e['best'].get(n))}"
                 if e.get("final") else "- | -" for n, _ in sets]
        wall = f"{e['train_wall_s']:.0f}" if "train_wall_s" in e else "-"
        seeds = ",".join(map(str, e["seeds"])) or "-"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {seeds} | {wall} | {e['status']} |")
    tta = res["time_to_accuracy"]
    if tta:
        lines += ["", f"## Time to accuracy on `{tta['eval_set']}` (target {100 * tta['target']:.1f} %)", "",
                  "| method | steps | train s |", "|---|---|---|"]
        for m, r in tta["methods"].items():
            reached = f"{r['step']} | {r['wall_s']:.0f}" if r else "not reached | -"
            lines.append(f"| {m} | {reached} |")
        ra = tta["ratio"]
        pair = (ra["numerator"], ra["denominator"])
        paper = " (SRFT paper: 2.28)" if pair == ("sft_then_grpo", "srft") else ""
        short = [m for m in pair if not tta["methods"].get(m)]
        if short or ra["wall_time"] is None:  # a side never reached the target: no ratio to print
            lines += ["", f"Ratio {pair[0]} / {pair[1]}: none, since {' and '.join(short) or 'a side'} did not "
                          f"reach {100 * tta['target']:.1f} %{paper}; the seed-by-seed sections below bound it."]
        else:
            lines += ["", f"Ratio {pair[0]} / {pair[1]}: wall time {ra['wall_time']:.2f}, steps "
                          f"{ra['steps']:.2f}{paper}."]
    for t in res.get("seed_targets") or []:
        lines += ["", f"## Time to {100 * t['target']:.1f} % on `{t['eval_set']}` ({t['fraction']:g} of the way from "
                      f"base to {cfg.ratio[0]}'s final accuracy), seed by seed", "",
                  "| method | seeds that reached it | mean train s (a run that never did counts its whole "
                  "training) |", "|---|---|---|"]
        lines += [f"| {m} | {e['reached']} of {e['seeds']} | {e['mean_wall_s']:.0f} |" for m, e in t["methods"].items()]
        ra = t.get("ratio")
        if ra:
            bound = {("numerator",): " (a lower bound: a numerator run never reached it)",
                     ("denominator",): " (an upper bound: a denominator run never reached it)",
                     ("numerator", "denominator"): " (both sides censored: neither bound holds)"}.get(
                tuple(ra["censored"]), "")
            claim = (f"; the claim >= {ra['claim']}: {ra['verdict']}" if "claim" in ra else "")
            lines += ["", f"Ratio {ra['numerator']} / {ra['denominator']} of mean train seconds: {ra['ratio']:.2f} "
                          f"[95 % over seeds: {ra['low']:.2f}, {ra['high']:.2f}]{bound}{claim}."]
    if res.get("paired"):
        lines += ["", "## Paired differences (last step, same items)", "",
                  "A - B in accuracy points with its 95 % bootstrap interval (items drawn once for both, each "
                  "method's seeds on their own); the claim A > B `held` when the interval lies above 0, `did "
                  "not hold` when below, else `inconclusive`.", "",
                  "| A - B | eval set | difference [95 %] | A > B |", "|---|---|---|---|"]
        lines += [f"| {d['a']} - {d['b']} | {d['eval_set']} | {100 * d['diff']:+.1f} [{100 * d['low']:+.1f}, "
                  f"{100 * d['high']:+.1f}] | {d['verdict']} |" for d in res["paired"]]
    dyn = res.get("dynamics") or {}
    if dyn.get("late_entropy"):
        lines += ["", "## Training signal against the benchmark", "",
                  "On-policy token entropy, mean over the last third of the steps, per seed:", "",
                  "| method | late on-policy entropy (per seed) |", "|---|---|"]
        lines += [f"| {m} | {', '.join(f'{v:.3f}' for v in vs)} |" for m, vs in dyn["late_entropy"].items()]
        t = dyn.get("entropy_test")
        if t:
            lines += ["", f"{t['a']} above {t['b']} (exact permutation test over seeds, one-sided): p = {t['p']:.3f}, "
                          f"{t['verdict']} (held needs p <= 0.05: at least 3 seeds a side)."]
    for key, r in (dyn.get("tracking") or {}).items():
        label = {"completion/len_mean": "response length", "reward/mean": "training reward"}.get(key, key)
        lines += ["", f"Spearman rho between the step's {label} and `{dyn['eval_set']}` accuracy over {r['n']} "
                      f"checkpoints: {r['rho']:+.2f} [95 %: {r['low']:+.2f}, {r['high']:+.2f}]; \"{label} does not "
                      f"track the score\": {r['verdict']}."]
    failed = {m: e["errors"] for m, e in res["methods"].items() if e["status"] == "failed"}
    if failed:
        lines += ["", "## Failed", ""] + [f"- {m} (seed {s}): {err}" for m, errs in failed.items()
                                          for s, err in errs.items()]
    if res["plots"]:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in res["plots"]]
    return "\n".join(lines) + "\n"


_CSS = ("body{font-family:system-ui,sans-serif;margin:1.5em auto;padding:0 1.5em;max-width:1360px;"
        "box-sizing:border-box;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .7em;"
        "text-align:right;white-space:nowrap}th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}"
        "tr:nth-child(even) td{background:#fafafa}code{background:#f3f3f3;padding:0 .2em}"
        ".plots{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0;width:calc(50% - .5em)}"
        "img{width:100%}figcaption{text-align:center;color:#555;font-size:.9em}")


def html_page(md: str, root: Path, plots: list[str], title: str) -> str:
    """A self-contained page: the markdown rendered to HTML (tables as tables, by markdown-it-py) and
    every PNG inlined (base64), two per row."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(md.split("\n## Plots")[0])
    imgs = "".join(f'<figure><img src="data:image/png;base64,{base64.b64encode((root / p).read_bytes()).decode()}"'
                   f' alt="{html.escape(Path(p).stem)}"><figcaption>{html.escape(Path(p).stem)}</figcaption></figure>'
                   for p in plots)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{body}<h2>Plots</h2><div class='plots'>{imgs}</div>"
            "</body></html>\n")

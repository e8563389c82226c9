"""Run the six stages in order, print the per-stage funnel, write `funnel.json`; the CLI entry points.

Imports `duotune.config` and the pipeline modules only (clients build their backends lazily).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from duotune.config import load_config, save_config
from duotune.pipeline import stages
from duotune.pipeline.clients import ChatClient, build_client
from duotune.pipeline.config import ClientConfig, PipelineConfig

STAGES = ("collect", "caption", "distil", "rewrite", "verify")


def run_pipeline(cfg: PipelineConfig, clients: Mapping[str, ChatClient] | None = None) -> dict[str, Any]:
    """Run (or resume) every stage; return the funnel: rows kept after each stage, SFT/RL pool
    sizes, drop reasons per stage and the items each stage newly computed (0 when resumed).

    clients: ready clients by name (e.g. custom ones); names not given are built from `cfg.clients`.
    """
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    built: dict[str, ChatClient] = dict(clients or {})

    def client(name: str) -> ChatClient:
        if name not in built:
            built[name] = build_client(cfg.clients[name])
        return built[name]

    funnel: dict[str, Any] = {"dropped": {}, "new_items": {}}
    rows, dropped, funnel["input_rows"] = stages.collect(cfg)
    _record(funnel, "collect", funnel["input_rows"], rows, dropped, 0)
    caption_client = client(cfg.caption.client) if cfg.caption.source == "model" else None
    steps = (("caption", lambda r: stages.caption(r, cfg, caption_client)),
             ("distil", lambda r: stages.distil(r, cfg, client(cfg.distil.client))),
             ("rewrite", lambda r: stages.rewrite(r, cfg, client(cfg.rewrite.client))),
             ("verify", lambda r: stages.verify(r, cfg, client(cfg.verify.client))))
    for name, step in steps:
        n_before = len(rows)
        rows, dropped, new = step(rows)
        _record(funnel, name, n_before, rows, dropped, new)
    sft, rl = stages.split(rows, cfg)
    funnel["sft"], funnel["rl"] = len(sft), len(rl)
    print(f"[pipeline] split    {len(rows):>7} -> sft {len(sft)}, rl {len(rl)}", flush=True)
    (out / "funnel.json").write_text(json.dumps(_ordered(funnel), indent=2) + "\n")
    return _ordered(funnel)


def _record(funnel: dict[str, Any], name: str, n_in: int, rows: list[Any], dropped: Any, new: int) -> None:
    funnel[name] = len(rows)
    funnel["dropped"][name] = dict(sorted(dropped.items()))
    funnel["new_items"][name] = new
    why = ", ".join(f"{k} {v}" for k, v in sorted(dropped.items())) or "none"
    print(f"[pipeline] {name:<8} {n_in:>7} -> {len(rows):<7} new items {new}; dropped: {why}",
          flush=True)


def _ordered(funnel: dict[str, Any]) -> dict[str, Any]:
    keys = ("input_rows", *STAGES, "sft", "rl", "dropped", "new_items")
    return {k: funnel[k] for k in keys if k in funnel}


class _RawDefaults(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the field table's layout and shows each flag's default."""


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `run` action to a `duotune pipeline` parser: `run CONFIG [key=value ...]`."""
    from duotune.config import describe_fields

    rows = describe_fields(PipelineConfig) + describe_fields(ClientConfig, prefix="clients.NAME.")
    width = max(len(k) for k, _, _ in rows)
    epilog = "config fields (YAML or key=value overrides):\n" + "\n".join(
        f"  {k:<{width}}  {desc} [default: {d}]" for k, d, desc in rows)
    sub = parser.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")
    p = sub.add_parser("run", help="collect -> caption -> distil -> rewrite -> verify -> split (resumable)",
                       formatter_class=_RawDefaults, epilog=epilog)
    p.add_argument("config", help="pipeline YAML, e.g. configs/pipeline/counting_scene_text.yaml")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. distil.temperature=0.6")


def run_pipeline_command(args: argparse.Namespace) -> int:
    """`duotune pipeline run CONFIG [key=value ...]`: load, run, print where the pools are."""
    cfg = load_config(PipelineConfig, args.config, args.overrides)
    funnel = run_pipeline(cfg)
    out = Path(cfg.out_dir)
    print(f"sft pool: {out / 'sft.jsonl'} ({funnel['sft']} rows); rl pool: {out / 'rl.jsonl'} "
          f"({funnel['rl']} rows); funnel: {out / 'funnel.json'}")
    return 0

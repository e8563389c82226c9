"""VLAA-Thinking data distillation (SPEC 4): collect -> caption -> distil -> rewrite -> verify -> split.

Pluggable chat clients (OpenAI-compatible HTTP, local transformers); resumable content-hashed JSONL
per stage; the SFT/RL pools split on the aha keywords. Never imports trainers, algos or rewards.
"""

from duotune.pipeline.clients import ChatClient, ClientRequestError, HTTPChatClient, LocalChatClient, build_client
from duotune.pipeline.config import ClientConfig, PipelineConfig
from duotune.pipeline.run import add_pipeline_arguments, run_pipeline, run_pipeline_command
from duotune.pipeline.stages import AHA_KEYWORDS, aha_keywords, word_change
from duotune.pipeline.store import StageError

__all__ = ["AHA_KEYWORDS", "ChatClient", "ClientConfig", "ClientRequestError", "HTTPChatClient",
           "LocalChatClient", "PipelineConfig", "StageError", "add_pipeline_arguments", "aha_keywords",
           "build_client", "run_pipeline", "run_pipeline_command", "word_change"]

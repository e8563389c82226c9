"""Data records, loaders, prompt templates and image decoding.

`Example` is the one record every loader produces and every sampler/trainer/eval consumes;
`load_examples` reads files and datasets into it; `templates` holds the prompt styles.
Importing this package fills the `prompt_style` and `data_format` registries (no torch, no models).
"""

from duotune.data.example import Example
from duotune.data.formats import data_formats, detect_format
from duotune.data.images import load_image
from duotune.data.loaders import load_examples
from duotune.data.templates import (
    BOXED_SUFFIX,
    LUFFY_SYSTEM_PROMPT,
    R1_SYSTEM_PROMPT,
    THINK_ANSWER_SUFFIX,
    PromptStyle,
    apply_prompt_style,
    get_prompt_style,
    last_boxed,
    prompt_styles,
    render_chat,
    render_demo,
)

__all__ = [
    "BOXED_SUFFIX", "LUFFY_SYSTEM_PROMPT", "R1_SYSTEM_PROMPT", "THINK_ANSWER_SUFFIX", "Example",
    "PromptStyle", "apply_prompt_style", "data_formats", "detect_format", "get_prompt_style",
    "last_boxed", "load_examples", "load_image", "prompt_styles", "render_chat", "render_demo",
]

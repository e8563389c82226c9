"""Data records, loaders, prompt templates and collation.

`Example` is the one record every loader produces and every sampler/trainer/eval consumes.
"""

from duotune.data.example import Example

__all__ = ["Example"]

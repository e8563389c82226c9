"""`duotune.memory`: a trim hands freed heap pages back (resident size falls), on Linux/glibc."""

import sys

import pytest

from duotune.memory import release_host_memory, rss_gb


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim and /proc are Linux")
def test_release_host_memory_returns_freed_heap_pages():
    # 100 MB in 64 KB blocks (below the mmap threshold: they live in the heap); the last block kept
    # pins the heap's top, so freeing the rest cannot shrink it on its own
    blocks = [bytearray(64 * 1024) for _ in range(1600)]
    keep = blocks[-1]
    del blocks
    before = rss_gb()
    assert release_host_memory() is True
    after = rss_gb()
    assert before - after > 0.05, (before, after)
    assert len(keep) == 64 * 1024

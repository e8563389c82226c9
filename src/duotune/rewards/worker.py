"""The grading worker process: `python -m duotune.rewards.worker FD` (FD: a socketpair end).

Started by `GradingPool` as a fresh interpreter (never a fork, never a re-import of the caller's main
script); grades items in its main thread so math-verify's `signal.alarm` timeouts work. Imports
math-verify (through `duotune.rewards.verify`); never torch.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any


def resolve(fn: str | Callable[..., Any]) -> Callable[..., Any]:
    """A callable from itself or from 'module:function'."""
    if callable(fn):
        return fn
    module, _, name = fn.partition(":")
    return getattr(importlib.import_module(module), name)


def worker_pid(*_args: Any) -> int:
    """The grading worker's process id, whatever the arguments (which worker took which item)."""
    import os

    return os.getpid()


def serve(conn: Connection) -> None:
    """Grade (fn, [(index, args), ...]) messages in order, one reply (index, status, value) per item;
    status is "ok", "timeout" (math-verify timed out and the value is falsy) or "error"."""
    from duotune.rewards import verify

    logging.getLogger("math_verify").propagate = False  # timeouts are counted, not printed
    conn.send(("ready", None, None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        fn_ref, items = msg
        try:
            fn = resolve(fn_ref)
        except Exception as exc:  # a bad reference is every item's error, not a crash (and a respawn)
            for idx, _ in items:
                conn.send((idx, "error", f"cannot load {fn_ref!r}: {type(exc).__name__}: {exc}"))
            continue
        for idx, args in items:
            before = verify.timeouts_seen()
            try:
                value = fn(*args)
            except Exception as exc:  # reported to the caller with the item index, never swallowed
                conn.send((idx, "error", f"{type(exc).__name__}: {exc}"))
                continue
            timed_out = verify.timeouts_seen() > before and not value
            _reply(conn, idx, "timeout" if timed_out else "ok", value)


def _reply(conn: Connection, idx: int, status: str, value: Any) -> None:
    """Send one result; a value that cannot be pickled becomes that item's error (pickling happens
    before any byte is written, so the connection stays usable)."""
    try:
        conn.send((idx, status, value))
    except Exception as exc:  # noqa: BLE001 - PicklingError, TypeError, AttributeError ...
        conn.send((idx, "error", f"returned an unpicklable {type(value).__name__} ({type(exc).__name__}: "
                                 f"{exc}); return numbers, strings or containers of them"))


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))  # one end of a socketpair: duplex

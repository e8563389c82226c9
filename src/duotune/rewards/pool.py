"""GradingPool: worker processes that grade with math-verify's own timeout, under an outer watchdog.

math-verify times out with `signal.alarm`, which works only in a process's main thread, and some
inputs (`\\boxed{9^{9^{9^{9^{9}}}}}`) can sit in C code where no signal lands. So each worker is a
fresh interpreter (`duotune.rewards.worker`) grading in its main thread, and a per-batch watchdog
kills and replaces a worker whose current item overruns its deadline. Imports only the standard
library and `duotune.errors`: the calling process never loads math-verify or installs signal handlers.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from duotune.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """One graded item: the function's value, or timed_out (stuck, crashed or math-verify timeout),
    or error (the function raised; its message)."""

    value: Any = None
    timed_out: bool = False
    error: str | None = None


def _extra_path() -> str:
    """The caller's import path minus the interpreter's own dirs (so 'module:function' references
    resolve in workers as in the caller, without putting site-packages ahead of the stdlib)."""
    own = tuple(os.path.realpath(p) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix})
    extra = [p for p in sys.path if p and not os.path.realpath(p).startswith(own)]
    inherited = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    return os.pathsep.join(p for p in dict.fromkeys(extra + inherited) if p)


class _Worker:
    """A fresh interpreter running `duotune.rewards.worker` (exec, not fork: safe with a parent's
    threads, and the caller's main script is never re-imported)."""

    def __init__(self) -> None:
        mine, theirs = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=_extra_path())
        self.proc = subprocess.Popen([sys.executable, "-m", "duotune.rewards.worker", str(theirs.fileno())],
                                     pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env)
        theirs.close()
        self.conn = Connection(mine.detach())
        self.ready = False  # until its first message it may still be importing math-verify
        self.pending: deque[int] = deque()
        self.since = time.monotonic()

    def stop(self, *, force: bool) -> None:
        if not force:
            try:
                self.conn.send(None)
                self.proc.wait(timeout=2.0)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5.0)
        self.conn.close()


class GradingPool:
    """Process pool for grading: `map(fn, args_list) -> list[Outcome]`, order preserved.

    num_workers: worker processes (each grades one item at a time in its main thread).
    timeout_s: per-item budget; math-verify gets ceil(timeout_s) s (its timeouts are whole seconds).
    watchdog_s: a worker silent on one item longer than this is killed and replaced and the item
        counts as timed out (default 3 * math-verify timeout + 1 s: gold parse, parse, compare).
    chunk_size: items sent to a worker at once (it replies per item, so the watchdog knows which).
    startup_s: grace for a new worker to import math-verify before the watchdog applies.
    Reused across calls; `close()` (or `with GradingPool(...) as pool:`) stops the workers.
    """

    def __init__(self, num_workers: int = 2, timeout_s: float = 5.0, *, watchdog_s: float | None = None,
                 chunk_size: int = 16, startup_s: float = 60.0):
        if int(num_workers) < 1:
            raise ConfigError(f"GradingPool num_workers={num_workers}: give at least 1 worker")
        if not timeout_s or timeout_s <= 0:
            raise ConfigError(f"GradingPool timeout_s={timeout_s}: give a positive number of seconds")
        self.num_workers, self.timeout_s, self.chunk_size = int(num_workers), float(timeout_s), chunk_size
        self.inner_seconds = max(1, math.ceil(self.timeout_s))
        self.watchdog_s = float(watchdog_s or 3 * self.inner_seconds + 1.0)
        self.startup_s = float(startup_s)
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.closed = False
        self.timeouts = 0        # items timed out over the pool's life
        self.replacements = 0    # workers killed and replaced

    def __enter__(self) -> GradingPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map(self, fn: str | Callable[..., Any], args_list: Sequence[tuple], *,
            group_key: Callable[[tuple], Hashable] | None = None) -> list[Outcome]:
        """Run `fn(*args)` for every tuple in workers; `fn` is a module-level function or
        'module:function'. Returns one Outcome per tuple, in order.

        group_key: items with equal keys go to the same worker in one chunk (a chunk grows past
        `chunk_size` rather than split a group), so per-worker caches keyed by it (the parsed gold
        answer) are filled once instead of once per worker."""
        with self._lock:
            if self.closed:
                raise RuntimeError("GradingPool is closed; create a new one (or use default_pool())")
            if os.getpid() != self._pid:  # inherited through fork: the workers belong to the parent
                self._workers, self._pid = [], os.getpid()
            while len(self._workers) < self.num_workers:
                self._workers.append(_Worker())
            return self._run(fn, [tuple(a) for a in args_list], group_key)

    def _run(self, fn: str | Callable[..., Any], items: list[tuple],
             group_key: Callable[[tuple], Hashable] | None) -> list[Outcome]:
        results: list[Outcome | None] = [None] * len(items)
        keys = [group_key(a) for a in items] if group_key else list(range(len(items)))
        groups: dict[Hashable, list[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault(k, []).append(i)
        todo: deque[int] = deque(i for members in groups.values() for i in members)
        busy: dict[Connection, _Worker] = {}
        chunk = max(1, min(self.chunk_size, math.ceil(len(items) / (2 * self.num_workers))))
        while todo or busy:
            for w in [w for w in self._workers if w.conn not in busy]:
                if not todo:
                    break
                ids = [todo.popleft() for _ in range(min(chunk, len(todo)))]
                while todo and keys[todo[0]] == keys[ids[-1]]:  # never split a group
                    ids.append(todo.popleft())
                try:
                    w.conn.send((fn, [(i, items[i]) for i in ids]))
                except (OSError, ValueError):  # died while idle: replace it, nothing was lost
                    todo.extendleft(reversed(ids))
                    self._replace(w, results, todo)
                    continue
                w.pending.extend(ids)
                w.since = time.monotonic()
                busy[w.conn] = w
            if not busy:  # every idle worker had died and was replaced: send again
                continue
            deadline = min(self._deadline(w) for w in busy.values())
            for conn in wait(list(busy), timeout=max(0.0, deadline - time.monotonic())):
                w = busy[conn]
                try:
                    idx, status, value = conn.recv()
                except (EOFError, OSError):  # crashed: its current item counts as timed out
                    del busy[conn]
                    self._replace(w, results, todo)
                    continue
                w.since = time.monotonic()
                if idx == "ready":
                    w.ready = True
                    continue
                w.pending.popleft()
                results[idx] = Outcome(value=value if status == "ok" else None,
                                       timed_out=status == "timeout", error=value if status == "error" else None)
                self.timeouts += status == "timeout"
                if not w.pending:
                    del busy[conn]
            now = time.monotonic()
            for conn, w in list(busy.items()):
                if now > self._deadline(w):
                    del busy[conn]
                    self._replace(w, results, todo)
        return [r if r is not None else Outcome(timed_out=True) for r in results]

    def _deadline(self, w: _Worker) -> float:
        return w.since + self.watchdog_s + (0.0 if w.ready else self.startup_s)

    def _replace(self, w: _Worker, results: list[Outcome | None], todo: deque[int]) -> None:
        """Kill `w`, score its current item as timed out, requeue the rest, start a fresh worker."""
        if not w.ready:
            w.stop(force=True)
            raise RuntimeError("a grading worker (python -m duotune.rewards.worker) died or hung while "
                               "starting; its error is on stderr. Check that math-verify imports in "
                               f"{sys.executable}")
        if w.pending:
            results[w.pending.popleft()] = Outcome(timed_out=True)
            self.timeouts += 1
        todo.extendleft(reversed(w.pending))
        w.stop(force=True)
        self._workers[self._workers.index(w)] = _Worker()
        self.replacements += 1
        log.warning("grading worker stuck or crashed; replaced it (%d so far)", self.replacements)

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring; empty before the first `map`)."""
        return [w.proc.pid for w in self._workers]

    def close(self) -> None:
        """Stop every worker (idempotent)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if os.getpid() == self._pid:
                for w in self._workers:
                    w.stop(force=False)
            self._workers = []


_default: GradingPool | None = None
_default_lock = threading.Lock()


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"${name}={raw!r} is not a number; unset it or give e.g. {default:g}") from None


def default_pool() -> GradingPool:
    """The process-wide pool the built-in rewards and `math_equal` use; created on first use, closed
    at exit. Size and per-item timeout come from $DUOTUNE_GRADING_WORKERS (default min(4, CPUs)) and
    $DUOTUNE_GRADING_TIMEOUT (default 5 s)."""
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            workers = int(_env_number("DUOTUNE_GRADING_WORKERS", min(4, os.cpu_count() or 1)))
            _default = GradingPool(workers, _env_number("DUOTUNE_GRADING_TIMEOUT", 5.0))
            atexit.register(_default.close)
        return _default

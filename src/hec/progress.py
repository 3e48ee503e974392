"""Progress reporting for long steps (key generation, evaluation, calibration)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TypedDict

__all__ = ["ProgressFn", "stderr_progress", "no_progress"]

# progress(stage, done, total); long evaluations may add a note (``bootstrap 2 of 5, ...``)
ProgressFn = Callable[..., None]


def no_progress(stage: str, done: int, total: int, note: str = "") -> None:
    pass


class _Drawn(TypedDict):
    """What ``stderr_progress`` last wrote."""

    t: float  # when the bar was last drawn (terminal)
    stage: str  # the stage it showed
    logged: float  # when a progress line was last logged (not a terminal)


def stderr_progress(
    min_interval: float = 0.2, log_after: float = 2.0, log_every: float = 60.0
) -> ProgressFn:
    """A callback drawing ``stage [done/total]`` on stderr.

    On a terminal the line is redrawn in place; in a log (not a terminal) a stage that took at
    least ``log_after`` seconds gets one line when it finishes, and a long one a line every
    ``log_every`` seconds meanwhile (a batch evaluation can take most of an hour).
    """
    last: _Drawn = {"t": 0.0, "stage": "", "logged": 0.0}
    started: dict[str, float] = {}
    tty = sys.stderr.isatty()

    def report(stage: str, done: int, total: int, note: str = "") -> None:
        now = time.monotonic()
        started.setdefault(stage, now)
        finished = done >= total
        if note:  # a milestone of a long evaluation (a bootstrap): one line each
            print(f"  {stage}: {note} ({done}/{total} ops)", file=sys.stderr, flush=True)
            last["logged"] = now
            return
        if not tty:
            elapsed = now - started[stage]
            if finished and elapsed >= log_after:
                print(f"  {stage}: done ({total}) in {elapsed:.1f} s", file=sys.stderr)
            elif not finished and now - max(last["logged"], started[stage]) >= log_every:
                last["logged"] = now
                print(
                    f"  {stage}: {done}/{total} after {elapsed:.0f} s", file=sys.stderr, flush=True
                )
            return
        if finished or now - last["t"] >= min_interval or stage != last["stage"]:
            last["t"], last["stage"] = now, stage
            width = 24
            filled = int(width * done / max(total, 1))
            bar = "#" * filled + "." * (width - filled)
            end = "\n" if finished else ""
            print(f"\r  {stage:<12} [{bar}] {done}/{total}", end=end, file=sys.stderr, flush=True)

    return report

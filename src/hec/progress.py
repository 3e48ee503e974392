"""Progress reporting for long steps (key generation, evaluation, calibration)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

__all__ = ["ProgressFn", "stderr_progress", "no_progress"]

# progress(stage, done, total)
ProgressFn = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    pass


def stderr_progress(min_interval: float = 0.2, log_after: float = 2.0) -> ProgressFn:
    """A callback drawing ``stage [done/total]`` on stderr.

    On a terminal the line is redrawn in place; in a log (not a terminal) a stage that took at
    least ``log_after`` seconds gets one line when it finishes.
    """
    last = {"t": 0.0, "stage": ""}
    started: dict[str, float] = {}
    tty = sys.stderr.isatty()

    def report(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        started.setdefault(stage, now)
        finished = done >= total
        if not tty:
            if finished and now - started[stage] >= log_after:
                print(f"  {stage}: done ({total}) in {now - started[stage]:.1f} s", file=sys.stderr)
            return
        if finished or now - last["t"] >= min_interval or stage != last["stage"]:
            last["t"], last["stage"] = now, stage
            width = 24
            filled = int(width * done / max(total, 1))
            bar = "#" * filled + "." * (width - filled)
            end = "\n" if finished else ""
            print(f"\r  {stage:<12} [{bar}] {done}/{total}", end=end, file=sys.stderr, flush=True)

    return report

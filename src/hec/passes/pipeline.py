"""Named pipelines: plain functions listing passes, one line per stage."""

from __future__ import annotations

from hec.options import CompileOptions
from hec.passes.lower_to_slots import LowerToSlots
from hec.passes.pass_manager import Pass
from hec.passes.schedule_rotations import ScheduleRotations

__all__ = ["slot_packing_pipeline"]


def slot_packing_pipeline(options: CompileOptions) -> list[Pass]:
    """Tensor graph → scheduled slot program (latency mode: one sample per ciphertext)."""
    return [
        LowerToSlots(options.slots),  # fuse linear chains; one matvec per chain, levels assigned
        ScheduleRotations(options.baby_step),  # matvec → hoisted baby steps + giant steps
    ]

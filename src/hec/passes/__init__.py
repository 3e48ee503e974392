"""Passes over the IR, the pass manager and the named pipelines."""

from hec.passes.lower_to_slots import LowerToSlots
from hec.passes.pass_manager import Pass, PassManager
from hec.passes.pipeline import slot_packing_pipeline
from hec.passes.schedule_rotations import ScheduleRotations

__all__ = ["LowerToSlots", "Pass", "PassManager", "ScheduleRotations", "slot_packing_pipeline"]

"""Passes over the IR, the pass manager and the named pipelines."""

from hec.passes.choose_kernels import ChooseKernels
from hec.passes.compose_rotations import ComposeRotations
from hec.passes.fuse_polynomials import FusePolynomials
from hec.passes.group_keys import GroupKeys
from hec.passes.lazy_relinearize import LazyRelinearize
from hec.passes.lower_to_batch import LowerToBatch
from hec.passes.lower_to_slots import LowerToSlots
from hec.passes.pass_manager import Pass, PassManager
from hec.passes.pipeline import batch_packing_pipeline, he_friendly_pipeline, slot_packing_pipeline
from hec.passes.prune_blocks import PruneBlocks
from hec.passes.replace_activations import ReplaceActivations, ValueStats
from hec.passes.schedule_rotations import ScheduleRotations

__all__ = [
    "ChooseKernels",
    "ComposeRotations",
    "FusePolynomials",
    "GroupKeys",
    "LazyRelinearize",
    "LowerToBatch",
    "LowerToSlots",
    "Pass",
    "PassManager",
    "PruneBlocks",
    "ReplaceActivations",
    "ScheduleRotations",
    "ValueStats",
    "batch_packing_pipeline",
    "he_friendly_pipeline",
    "slot_packing_pipeline",
]

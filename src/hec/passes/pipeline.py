"""Named pipelines: plain functions listing passes, one line per stage."""

from __future__ import annotations

import numpy as np

from hec.options import DEFAULT_ERROR_BUDGET, CompileOptions
from hec.passes.calibrate_norms import CalibrationStats, NormStats, ReplaceNorms
from hec.passes.calibrate_polynomials import CalibratePolynomials
from hec.passes.check_ranges import CheckRanges
from hec.passes.choose_degrees import ChooseDegrees
from hec.passes.choose_kernels import ChooseKernels
from hec.passes.compose_rotations import ComposeRotations
from hec.passes.drop_channels import DropDeadChannels
from hec.passes.expand_copies import ExpandCopies
from hec.passes.fuse_polynomials import FusePolynomials
from hec.passes.lazy_relinearize import LazyRelinearize
from hec.passes.lower_to_batch import LowerToBatch
from hec.passes.lower_to_slots import CheckInputLayout, LowerToSlots
from hec.passes.pass_manager import Pass
from hec.passes.place_bootstraps import BOOTSTRAP_MAX_POLY_DEPTH, PlaceBootstraps
from hec.passes.refit_layers import RefitLayers
from hec.passes.replace_activations import ReplaceActivations
from hec.passes.schedule_rotations import ScheduleRotations
from hec.progress import ProgressFn, no_progress

__all__ = ["he_friendly_pipeline", "slot_packing_pipeline", "batch_packing_pipeline"]


def he_friendly_pipeline(
    options: CompileOptions,
    stats: CalibrationStats | None = None,
    calibration: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    progress: ProgressFn = no_progress,
) -> list[Pass]:
    """Tensor graph → tensor graph CKKS can evaluate (polynomials, average pools only).

    With the ``calibration`` inputs (and their ``labels``, if any), each activation's degree is
    chosen from the accuracy budget (``choose-degrees``) unless ``options`` fix the degree or a
    fit-error budget; without them, or for a model that is not a ReLU model when the budget is
    left at its default, the fit-error budget picks it as before. When the accuracy budget
    picks them, the linear layers are then refitted by least squares to the original model's
    outputs of those layers (``refit-layers``); each candidate was judged with that refit.
    """
    passes: list[Pass] = []
    if stats is not None:  # the model has non-polynomial ops and calibration data was given
        budget = DEFAULT_ERROR_BUDGET if options.error_budget is None else options.error_budget
        # with bootstrapping asked for, a polynomial and the map before it must fit between
        # two bootstraps at activation inputs (the values known to lie within [-1, 1])
        depth = options.max_poly_depth
        if options.bootstrap == "on":
            depth = min(depth, BOOTSTRAP_MAX_POLY_DEPTH)
        replace = ReplaceActivations(stats, options.degree, budget, options.margin, depth)
        norms = (
            [ReplaceNorms(stats, options.norm_tolerance)]
            if any(isinstance(s, NormStats) for s in stats.values())  # normalization layers
            else []
        )
        by_accuracy = options.degree is None and options.error_budget is None
        refit: list[Pass] = []
        if by_accuracy and calibration is not None:  # the accuracy budget picks the degrees
            choose = ChooseDegrees(
                replace,
                calibration,
                labels,
                options.max_accuracy_loss,
                norms,
                progress=progress,
                refit=True,  # each candidate judged with its linear layers refitted
            )
            passes.append(choose)
            refit = [RefitLayers(choose, calibration)]  # ... and the chosen one refitted
        passes += [replace, *norms, *refit]
    passes.append(FusePolynomials())  # any element-wise polynomial region → one poly op
    if calibration is not None:  # the model's own polynomials: their inputs' measured ranges
        passes.append(CalibratePolynomials(calibration, options.margin))
    return passes


def slot_packing_pipeline(
    options: CompileOptions, check_ranges: bool = True, progress: ProgressFn = no_progress
) -> list[Pass]:
    """Tensor graph → scheduled slot program (latency mode: one sample per ciphertext).

    ``check_ranges=False``: the parameters are chosen afterwards from the values the program
    reaches on typical inputs (``backend_openfhe.precision``), which replaces the check.
    ``progress``: the lowering's walk, op by op (stage ``compile: lower-to-slots``)."""
    copies = options.readout == "copies"
    # copies of the program must fit one ciphertext: channels pruning left unread leave the
    # tensors first (constant ones fold into a bias). Not otherwise: the strided layouts of
    # fewer channels differ from the ones a rotation budget was pruned under.
    passes: list[Pass] = [DropDeadChannels()] if copies else []
    lower = LowerToSlots(
        options.slots,
        negligible=2.0 ** (14 - options.scaling_bits),
        block_local=options.sample_blocks,
        input_layout="direct" if options.input_layout == "auto" else options.input_layout,
        output_layouts=options.output_layouts,
        stencil_sums=options.stencil_sums,
        fold_short_maps=options.fold_short_maps,
        readout="copies" if copies else "matrix",
        progress=progress,
    )
    # an input layout the first map cannot take is refused before the passes that read the
    # whole graph (auto tries each layout: a ResNet's im2col needs 2^19 slots); direct: no-op
    passes.append(CheckInputLayout(lower))
    if check_ranges:
        # every value the program will hold bounded from the calibrated ranges: refuse one
        # that could pass what the first modulus holds at the scale (instead of garbage)
        passes.append(
            CheckRanges(
                options.scaling_bits, options.first_mod_bits, input_range=options.input_range
            )
        )
    passes += [
        # fuse linear chains; one matvec per chain, levels assigned; the input layout designed
        # for the first map (auto is resolved by hec.api, which compiles each candidate)
        lower,
        # a program deeper than one modulus chain: bootstraps where a value would pass its
        # last level, every level recomputed (shallow programs: unchanged)
        PlaceBootstraps(
            options.bootstrap, options.scaling_bits, options.first_mod_bits, options.security
        ),
        # each matvec's kernel, as attributes: baby-step/giant-step with its split, or folded
        # (short maps: merged diagonals + block sum)
        ChooseKernels(
            options.baby_step, block_local=options.sample_blocks, fold=options.fold_short_maps
        ),
        # matvec → hoisted baby steps + giant steps as its kernel says (exact shifts when
        # sample blocks)
        ScheduleRotations(block_local=options.sample_blocks),
    ]
    if copies:
        # the program repeated once per output, each copy reading its own output
        passes.append(ExpandCopies())
    if options.rotation_keys != "all" or options.max_rotation_keys is not None:
        # rotations outside the key basis (or the cap) → chains of powers of two
        passes.append(
            ComposeRotations(
                options.rotation_keys, options.sample_blocks, options.max_rotation_keys
            )
        )
    return passes


def batch_packing_pipeline(options: CompileOptions, batch: int) -> list[Pass]:
    """Tensor graph → batch program (throughput mode: one sample per slot, ``batch`` slots)."""
    return [
        # as in slot packing
        CheckRanges(options.scaling_bits, options.first_mod_bits, input_range=options.input_range),
        LowerToBatch(batch),  # one ciphertext per element; linear chains as scalar weighted sums
        LazyRelinearize(),  # key switches and rescales after the maps that shrink the tensor
    ]

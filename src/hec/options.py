"""``CompileOptions``: the one options object threaded through the compiler (no globals)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["CompileOptions", "DEFAULT_ERROR_BUDGET", "DEFAULT_PRECISION"]

DEFAULT_ERROR_BUDGET = 0.05  # the fit-error budget when it picks the degrees
# the output (logit) error ``precision="auto"`` aims for: argmax and logits within 1e-2
DEFAULT_PRECISION = 0.01


@dataclass(frozen=True)
class CompileOptions:
    """How to compile.

    Args:
        slots: slots per ciphertext; ``None`` picks the smallest power of two that holds every
            tensor of the model.
        baby_step: force the baby-step size of every linear map; ``None`` searches it per map.
        scaling_bits: bits of the CKKS scale Δ (and of each rescaling prime), where
            ``precision`` does not decide.
        first_mod_bits: bits of the first prime (headroom for the integer part of values),
            where ``precision`` does not decide.
        precision: largest output error (absolute, e.g. on the logits) the program should
            keep: with calibration data, a slot program gets the smallest scale and first
            prime that meet it (``backend_openfhe.precision``), in place of ``scaling_bits``
            and ``first_mod_bits``. ``"auto"`` (default): ``DEFAULT_PRECISION`` (1e-2) for a
            slot program compiled with calibration data while ``scaling_bits`` and
            ``first_mod_bits`` are at their defaults and it needs no bootstrapping; otherwise
            those two decide. ``None``: those two decide.
        security: OpenFHE security level; 128-bit classic unless you have a reason.
        dump_ir_after: directory where the IR is written after each pass that changes it.
        degree: polynomial degree replacing every non-polynomial activation; ``None`` picks one
            per activation: from ``max_accuracy_loss`` or from ``error_budget``.
        error_budget: largest relative RMS error of an activation's polynomial on the
            calibration data: each activation gets the lowest depth-efficient degree meeting
            it. ``None`` (not given): the accuracy budget decides where it applies (below),
            else ``DEFAULT_ERROR_BUDGET``.
        max_accuracy_loss: largest loss of top-1 accuracy (percentage points) on the
            calibration data, against its labels or, without labels, as disagreement with the
            original model: the degrees are chosen for the cheapest program within it
            (``choose-degrees``). Used when neither ``degree`` nor ``error_budget`` is given;
            ``None`` (default): the fit-error budget decides (a budget met on the calibration
            images can be missed on new data: docs/polynomials.md).
        margin: fraction of an activation input's observed range added on each side of the
            interval its polynomial is fitted on.
        max_poly_depth: deepest polynomial (in levels) the automatic degree choice considers.
        norm_tolerance: largest relative RMS error (calibration data) of a normalization layer's
            output with its per-sample statistics replaced by calibrated constants.
        input_range: ``(low, high)`` of the input's elements; ``check-ranges`` bounds the values
            computed from the input before any calibrated polynomial from it. ``hec.compile``
            takes it from the calibration data when not given; ``None``: those are not checked.
        sample_blocks: throughput mode within slot packing: one ciphertext carries as many
            samples as the ring leaves room for (``ring_dim / (2·slots)`` blocks of ``slots``
            slots), at the price of block-local linear maps (up to twice the diagonals).
        packing: ``"slots"`` (latency: one input spread over the slots of a ciphertext),
            ``"batch"`` (throughput: one input per slot, one ciphertext per tensor element) or
            ``"auto"`` (batch packing when ``batch_size`` inputs are faster that way).
        batch_size: inputs per evaluation in batch packing (rounded up to a power of two, at
            most half the ring dimension); ``None`` fills the slots of the smallest ring the
            program's depth allows.
        memory_limit: bytes the evaluating process may need at its peak; ``None``: this
            machine's memory. A slot program past it gets fewer rotation keys, its other
            rotations composed of them (``search.within_memory``); a batch program is
            scheduled within it. Compilation refuses a program predicted to need more.
        input_layout: how the client packs the input in slot packing (``passes.input_layouts``):
            ``direct`` (contiguous), ``replicated`` (one copy per output channel of the first
            convolution), ``im2col`` (one slot per term of the first map), or ``auto``: each
            that applies is compiled and the one with the lowest estimated time is kept.
        fold_short_maps: evaluate linear maps with few outputs (dense layers) as one plaintext
            per diagonal residue and a sum of blocks (``schedule_rotations.FoldPlan``) where
            that needs fewer rotations; off: plain baby-step/giant-step for every map.
        output_layouts: slot packing: a map whose output only linear maps read (through
            element-wise polynomials) may keep it on its input's grid
            (``passes.output_layouts``): ``auto`` where that is cheaper, and a pruned dense
            layer's neurons on slots they read (``anchored``) where the whole program is then
            cheaper; ``anchored`` always tries those; ``strided`` grids wherever it can;
            ``contiguous`` never.
        stencil_sums: slot packing: an average pool becomes rotate-and-add on its input's
            grid (``passes.stencil_sums``: no plaintext multiply, no level; the map after it
            reads one diagonal per weight instead of one per pool tap): ``auto`` where that
            is cheaper than fusing the pool into that map, ``always``, or ``never``.
        readout: slot packing: how the output layer is computed (``passes.expand_copies``):
            ``matrix``: as a map like any other; ``copies``: the client packs one copy of the
            input per output (the output size rounded up to a power of two, each copy the
            program's slots) and each copy computes one output as a dot product, summed by
            about log2(features) rotations, however many weights; ``auto``: both where the
            copies fit a ciphertext, the one with the lower estimated time kept.
        rotation_keys: ``"all"``: one key per rotation amount the program uses; ``"pow2"``:
            keys for ``±2^i`` only, every other rotation composed of them (fewer keys and
            less key memory, more rotations; see ``compose-rotations``).
        max_rotation_keys: at most this many rotation keys: the amounts that save the most
            rotations keep their own key, the others are composed of powers of two.
        bootstrap: slot packing: ``"auto"`` bootstraps a program whose leveled parameters
            would need a ring above 2^16 (``place-bootstraps``); ``"on"`` uses the
            bootstrapping chain (ring 2^16, 59-bit scale) for any program, with bootstraps
            where it outgrows the chain; ``"off"`` never bootstraps.
    """

    slots: int | None = None
    baby_step: int | None = None
    scaling_bits: int = 40
    first_mod_bits: int = 60
    precision: float | str | None = "auto"
    security: str = "HEStd_128_classic"
    dump_ir_after: Path | None = None
    degree: int | None = None
    error_budget: float | None = None
    max_accuracy_loss: float | None = None
    margin: float = 0.05
    max_poly_depth: int = 5
    norm_tolerance: float = 0.1
    input_range: tuple[float, float] | None = None
    sample_blocks: bool = False
    packing: str = "slots"
    batch_size: int | None = None
    memory_limit: int | None = None
    input_layout: str = "auto"
    rotation_keys: str = "all"
    fold_short_maps: bool = True
    output_layouts: str = "auto"
    stencil_sums: str = "auto"
    readout: str = "matrix"
    max_rotation_keys: int | None = None
    bootstrap: str = "auto"

"""Write the generated ``<pass>/<name>.in.txt`` inputs of the per-pass golden text tests.

Each input is a small model of ``tests/op_cases.py`` (or ``onnx_builders``) imported and taken
through the passes that precede the one under test, printed in exact mode. The hand-written
inputs (``fuse-polynomials/``, ``check-ranges/``) are not touched. Run from the repository
root: ``python tests/passes/golden_text/make_inputs.py``; then ``HEC_UPDATE_GOLDENS=1`` on
``tests/passes/test_golden_text.py`` writes the expected outputs, to review and commit.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hec.frontend import import_onnx
from hec.ir import Graph, print_graph
from hec.passes import LowerToBatch, LowerToSlots, PassManager, ScheduleRotations
from hec.recover import prunable_ops

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/, for the model builders

from onnx_builders import conv_pool_conv  # noqa: E402
from op_cases import CASES  # noqa: E402


def _case(name: str, passes: list) -> Graph:
    graph = import_onnx(CASES[name]()[0], name)
    return PassManager(passes).run(graph)


def _dead_channels() -> Graph:
    """conv_pool_conv with a constant conv1 filter and a conv1 channel conv2 never reads."""
    graph = import_onnx(conv_pool_conv(c1=3, c2=2, k=3, pool=2, size=6), "dead_channels")
    conv1, conv2, _ = prunable_ops(graph)
    w1, w2 = conv1.consts["weight"].copy(), conv2.consts["weight"].copy()
    w1[1], w2[:, 2] = 0.0, 0.0
    conv1.consts = {**conv1.consts, "weight": w1}
    conv2.consts = {**conv2.consts, "weight": w2}
    return graph


INPUTS = {
    "lower-to-slots/residual_across_levels": lambda: _case("residual_across_levels", []),
    "lower-to-slots/cryptonets_like": lambda: _case("cryptonets_like", []),
    "schedule-rotations/residual_across_levels": lambda: _case(
        "residual_across_levels", [LowerToSlots()]
    ),
    "expand-copies/residual_across_levels": lambda: _case(
        "residual_across_levels", [LowerToSlots(readout="copies"), ScheduleRotations()]
    ),
    "compose-rotations/residual_across_levels": lambda: _case(
        "residual_across_levels", [LowerToSlots(), ScheduleRotations()]
    ),
    "drop-dead-channels/conv_pool_conv": _dead_channels,
    "lower-to-batch/residual_across_levels": lambda: _case("residual_across_levels", []),
    "lazy-relinearize/cryptonets_like": lambda: _case("cryptonets_like", [LowerToBatch(16)]),
}


def main() -> None:
    for stem, build in INPUTS.items():
        path = HERE / f"{stem}.in.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text(print_graph(build(), exact=True))
        print(f"wrote {path.relative_to(HERE)}")


if __name__ == "__main__":
    main()

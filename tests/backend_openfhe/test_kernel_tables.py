"""Every op kind of the slot and batch dialects has its OpenFHE kernel, so a new op cannot be
added to the IR and forgotten in the backend; the generated programs hold each kernel once."""

from __future__ import annotations

import pytest

from hec.backend_openfhe.batch_kernels import BATCH_FUNCTIONS, BATCH_KERNELS
from hec.backend_openfhe.slot_kernels import LOWERED_BEFORE_BACKEND, SLOT_FUNCTIONS, SLOT_KERNELS
from hec.ir import op_kinds


@pytest.mark.parametrize(
    "dialect, table, lowered",
    [("slot", SLOT_KERNELS, LOWERED_BEFORE_BACKEND), ("batch", BATCH_KERNELS, {})],
)
def test_every_registered_op_kind_has_a_kernel(dialect, table, lowered) -> None:
    kinds = op_kinds(dialect)  # every module registering ops is imported by hec.ir
    assert kinds, f"no {dialect} op kinds found"
    assert not table.keys() & lowered.keys()
    assert kinds == table.keys() | lowered.keys(), (
        f"{dialect} kinds without a kernel: {sorted(kinds - table.keys() - lowered.keys())}; "
        f"kernels of no registered kind: {sorted(table.keys() - kinds)}"
    )


@pytest.mark.parametrize(
    "table, functions", [(SLOT_KERNELS, SLOT_FUNCTIONS), (BATCH_KERNELS, BATCH_FUNCTIONS)]
)
def test_generated_programs_define_every_kernel_once(table, functions) -> None:
    names = [f.__name__ for f in functions]
    assert len(names) == len(set(names))
    assert {k.run.__name__ for k in table.values()} <= set(names)

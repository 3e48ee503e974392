"""group-keys: load rotation keys a group at a time instead of all at once.

A rotation key is 6-122 MB (rings 2^14-2^16) and a program loads all of them before its first
op, so a deep program's keys alone can exceed the machine: ResNet-20's 296 keys are 36 GB, and
the bootstrapping keys of a 16,384-slot bootstrap another 8.2 GB. OpenFHE keeps a key pair's
rotation keys in one map that it can only clear whole; so the ops are cut into groups of
consecutive ops, and the server clears the map and reads the next group's key files (one per
key, ``runtime.key_groups``) before the first op that needs it.

The pass sets ``key_group`` on every op that switches keys: a bootstrap gets
``BOOTSTRAP_GROUP`` (the bootstrapping keys, a group of their own), a rotation the index of
its group. A new group starts after each bootstrap, and where the ops' distinct rotation
amounts would pass ``max_keys`` (``None``: no cap); ``slot_ops.key_groups`` reads the
groups back (``params.key_groups``). A group is loaded once per stretch of ops it covers, so
the cost is one load per group and two per bootstrap (its keys, then the next group's).

Preserves: the slot function (attributes only). Requires: a scheduled slot graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hec.errors import ParameterError
from hec.ir import Graph
from hec.ir.slot_ops import BOOTSTRAP_GROUP, rotation_amounts

__all__ = ["GroupKeys"]


@dataclass(frozen=True)
class GroupKeys:
    """Mark each key-switching op with the key group it needs.

    Args:
        max_keys: the most rotation keys a group may hold (``None``: a group per stretch
            between bootstraps).

    Raises:
        ParameterError: one op alone needs more than ``max_keys`` keys.
    """

    max_keys: int | None = None
    name: ClassVar[str] = "group-keys"

    def run(self, graph: Graph) -> bool:
        marks, group, held = [], 0, set[int]()  # marked once all fit: no half-grouped graph
        for op in graph.ops:
            if op.kind == "bootstrap":
                marks.append((op, BOOTSTRAP_GROUP))
                if held:
                    group, held = group + 1, set()
                continue
            amounts = set(rotation_amounts(op))
            if not amounts:
                continue
            if self.max_keys is not None and len(held | amounts) > self.max_keys:
                if len(amounts) > self.max_keys:
                    raise ParameterError(
                        f"{op.kind} ({op.origin}) rotates by {len(amounts)} amounts, more "
                        f"than the {self.max_keys} keys a group may hold"
                    )
                group, held = group + 1, set()
            held |= amounts
            marks.append((op, group))
        for op, g in marks:
            op.attrs["key_group"] = g
        return True

"""``Plan``: the layout and kernel decisions that shape a program, as data that travels.

The search layer (``hec.search``) decides a plan per compilation; ``hec optimize`` prunes for one
and records it in the ONNX model it writes (``metadata_props``, key ``hec.plan``), and ``hec
compile`` replays a recorded plan: the same program, without repeating options, and without
lowering the candidates again. A plan holds resolved choices only (no ``auto`` where the search
chose), plus the lowering options pruning counted under.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from hec.errors import ModelError
from hec.options import CompileOptions

__all__ = ["Plan", "PLAN_KEY", "read_plan", "write_plan", "replay_plan"]

PLAN_KEY = "hec.plan"  # the ONNX metadata_props key
_VERSION = 1


@dataclass(frozen=True)
class Plan:
    """The decisions of one program (see ``CompileOptions`` for what each value means).

    Args:
        packing: ``slots`` or ``batch``.
        input_layout: how the client packs the input (slot packing).
        output_layouts: how the lowering lays out the maps' outputs (``auto``: per map,
            where cheaper; ``anchored``: a pruned dense layer's neurons on slots they read).
        readout: ``matrix`` or ``copies``.
        stencil_sums: average pools as rotate-and-add: ``auto``, ``always`` or ``never``.
        fold_short_maps: whether the scheduler may fold short maps.
        slots: slots per ciphertext (``None``: the smallest that holds every tensor).
    """

    packing: str = "slots"
    input_layout: str = "direct"
    output_layouts: str = "auto"
    readout: str = "matrix"
    stencil_sums: str = "auto"
    fold_short_maps: bool = True
    slots: int | None = None

    @classmethod
    def of(cls, options: CompileOptions, **choices: Any) -> Plan:
        """The plan ``options`` fix, with the search's ``choices`` (e.g. ``input_layout``)."""
        plan = cls(
            packing="batch" if options.packing == "batch" else "slots",
            input_layout="direct" if options.input_layout == "auto" else options.input_layout,
            output_layouts=options.output_layouts,
            readout="matrix" if options.readout == "auto" else options.readout,
            stencil_sums=options.stencil_sums,
            fold_short_maps=options.fold_short_maps,
            slots=options.slots,
        )
        return replace(plan, **choices)

    def apply(self, options: CompileOptions) -> CompileOptions:
        """``options`` with this plan's decisions (what the packing pipeline reads)."""
        if self.packing == "batch":
            return replace(options, packing="batch")
        return replace(
            options,
            packing="slots",
            input_layout=self.input_layout,
            output_layouts=self.output_layouts,
            readout=self.readout,
            stencil_sums=self.stencil_sums,
            fold_short_maps=self.fold_short_maps,
            slots=self.slots,
        )

    def to_json(self) -> str:
        return json.dumps({"version": _VERSION, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "the model") -> Plan:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ModelError(f"{where}: metadata '{PLAN_KEY}' is not JSON ({exc})") from None
        version = data.pop("version", None) if isinstance(data, dict) else None
        known = {f.name for f in fields(cls)}
        if version != _VERSION or not set(data) <= known:
            raise ModelError(
                f"{where}: metadata '{PLAN_KEY}' has version {version!r} or fields hec does not "
                f"know; optimize the model again with this hec, or compile with --no-plan"
            )
        return cls(**data)


def read_plan(model: Any, where: str = "the model") -> Plan | None:
    """The plan recorded in an ONNX ``ModelProto``'s ``metadata_props`` (``None``: none)."""
    for prop in model.metadata_props:
        if prop.key == PLAN_KEY:
            return Plan.from_json(prop.value, where)
    return None


def write_plan(model: Any, plan: Plan) -> None:
    """Record ``plan`` in an ONNX ``ModelProto``'s ``metadata_props`` (replacing any)."""
    for i, prop in enumerate(model.metadata_props):
        if prop.key == PLAN_KEY:
            del model.metadata_props[i]
            break
    entry = model.metadata_props.add()
    entry.key, entry.value = PLAN_KEY, plan.to_json()


# Options a recorded plan decides, with the option's default: an option left at its default
# takes the plan's value; one given otherwise overrides the plan.
_REPLAYED = {
    "input_layout": "auto",
    "output_layouts": "auto",
    "readout": "matrix",
    "stencil_sums": "auto",
    "fold_short_maps": True,
    "slots": None,
}


def replay_plan(options: CompileOptions, plan: Plan) -> tuple[CompileOptions, Plan | None]:
    """``options`` completed by a recorded ``plan``, and the plan to lower exactly (``None``
    when an option given overrides one of its decisions: then the search decides again, with
    the plan's other values as options)."""
    if plan.packing != "slots" or options.packing != "slots":  # slot plans apply to slots
        return options, None
    merged: dict[str, Any] = {}
    overridden = False
    for name, default in _REPLAYED.items():
        given = getattr(options, name)
        if given == default:
            merged[name] = getattr(plan, name)
        else:
            merged[name] = given
            overridden |= given != getattr(plan, name)
    options = replace(options, packing=plan.packing, **merged)
    return options, None if overridden else plan

"""``report.json`` as typed records: what ``hec compile`` writes and every reader reads.

``ProgramFigures`` are the figures of one lowered program: ``report.program_report`` and
``batch_program_report`` make them, the input-layout search adds its choices, and the pruner
compares them. ``ProgramReport`` is the whole file: those figures plus what ``compile()`` knows
of the model (shapes, estimate, activations, client tail, accuracy, pruning).

The JSON keeps the key order and values it had before it had a schema, with ``schema_version``
first. A report without ``schema_version`` (written before it), or with a version newer than
``SCHEMA_VERSION``, is refused with one line saying to compile again. Unknown keys are refused
too: any change of fields bumps the version, so a key version 1 does not know means a file this
hec would misread. Parts whose content follows the pass that writes them (activation rows,
``inputs_outside``, ``accuracy``, ``pruning``, the layout candidates) stay plain dicts.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, Field, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from hec.backend_openfhe.report import BATCH_COUNTED, COUNTED
from hec.errors import ArtifactError

__all__ = [
    "SCHEMA_VERSION",
    "CkksParameters",
    "OpCounts",
    "Layer",
    "Totals",
    "BatchMemory",
    "Choice",
    "Estimates",
    "ProgramFigures",
    "ProgramReport",
]

SCHEMA_VERSION = 1
REPORT_FILE = "report.json"

# The counts in the order each packing's report writes them (``report.py`` builds them so).
SLOT_COUNTS = (*COUNTED, "diagonals", "hoisted_rotations", "summed_rotations")
# a batch report has the slot report's keys too (rotations and rotation keys are 0)
BATCH_COUNTS = (
    "rotations",
    "hoisted_rotations",
    "plaintext_multiplies",
    "diagonals",
    *BATCH_COUNTED,
)


class _Record:
    """A JSON object with fixed keys: ``to_dict`` writes the set fields (not ``None``) in
    ``key_order()``; ``from_dict`` refuses unknown and missing keys."""

    # field -> record type, for fields holding a record or a list of records
    NESTED: ClassVar[dict[str, type[_Record]]] = {}
    # every record is a dataclass (declared for the type checker: fields() takes only those)
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def key_order(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.key_order():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, _Record):
                value = value.to_dict()
            elif name in self.NESTED:
                value = [v.to_dict() for v in value]
            out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = REPORT_FILE) -> Any:
        if not isinstance(data, dict):
            raise ArtifactError(f"{where}: expected an object, got {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ArtifactError(
                f"{where}: unknown field {unknown[0]!r} for report schema version "
                f"{SCHEMA_VERSION}; compile the model again with this hec"
            )
        required = [n for n, f in known.items() if f.default is MISSING]
        missing = [n for n in required if n not in data]
        if missing:
            raise ArtifactError(
                f"{where}: field {missing[0]!r} missing; compile the model again with this hec"
            )
        values = dict(data)
        for name, kind in cls.NESTED.items():
            value = values.get(name)
            if isinstance(value, list):
                values[name] = [
                    kind.from_dict(v, f"{where}: {name}[{i}]") for i, v in enumerate(value)
                ]
            elif value is not None:
                values[name] = kind.from_dict(value, f"{where}: {name}")
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class CkksParameters(_Record):
    """The ``ckks`` section: the parameters ``params.json`` holds, as the figures use them.

    ``samples_per_ciphertext`` is set in slot packing, ``batch`` (inputs per ciphertext) in
    batch packing."""

    ring_dim: int
    slots: int
    samples_per_ciphertext: int | None = None
    batch: int | None = None
    depth: int
    scaling_bits: int
    first_mod_bits: int
    log_q_bits: int
    security: str
    scaling_technique: str


@dataclass(frozen=True, kw_only=True)
class OpCounts(_Record):
    """HE operations of a layer or of the whole program (``report.COUNTED``). Batch packing
    also counts scalar multiplies, relinearizations and ciphertexts (tasks); its rotation
    figures are 0, so tables can mix both packings."""

    rotations: int
    hoisted_rotations: int
    plaintext_multiplies: int
    diagonals: int
    ciphertext_multiplies: int
    rescales: int
    additions: int
    plaintext_additions: int
    level_reductions: int
    polynomials: int
    rotation_keys: int
    # rotations whose key switch shares a rotate_sum's ModDown (absent in batch packing and in
    # reports written before it existed)
    summed_rotations: int | None = None
    scalar_multiplies: int | None = None
    relinearizations: int | None = None
    ciphertexts: int | None = None

    @property
    def batch_packed(self) -> bool:
        return self.scalar_multiplies is not None

    @property
    def count_names(self) -> tuple[str, ...]:
        """The operation counts this packing reports, in the report's order."""
        return BATCH_COUNTS if self.batch_packed else SLOT_COUNTS


@dataclass(frozen=True, kw_only=True)
class Layer(OpCounts):
    """One row of ``layers``: a run of slot ops with one origin (ONNX nodes), its levels and
    counts, and the cost model's ``predicted_ms`` (absent while ``compile()`` estimates)."""

    name: str
    kind: str
    level_in: int
    level_out: int
    predicted_ms: float | None = None

    def key_order(self) -> tuple[str, ...]:
        batch = ("ciphertexts",) if self.batch_packed else ()
        head = ("name", "kind", "level_in", "level_out")
        return (*head, *self.count_names, "rotation_keys", *batch, "predicted_ms")


@dataclass(frozen=True, kw_only=True)
class Totals(OpCounts):
    """The ``totals`` section: the program's counts, its rotation keys' bytes and its depth."""

    rotation_key_bytes: int
    depth: int

    def key_order(self) -> tuple[str, ...]:
        batch = ("ciphertexts",) if self.batch_packed else ()
        return (*self.count_names, "rotation_keys", "rotation_key_bytes", "depth", *batch)


@dataclass(frozen=True, kw_only=True)
class BatchMemory(_Record):
    """The ``memory`` section of a batch program (``batch_memory.MemoryPlan``, in bytes)."""

    schedule: str
    ciphertexts_computed: int
    input_ciphertexts: int
    output_ciphertexts: int
    max_live_ciphertexts: int
    ciphertext_bytes: int
    peak_ciphertext_bytes: int
    key_bytes: int
    program_bytes: int


@dataclass(frozen=True, kw_only=True)
class Choice(_Record):
    """An ``auto`` decision of slot packing (``input_layout``, ``output_layouts``,
    ``readout``): what was kept, what was asked for and, for the input layout, what every
    candidate would have cost (free-form rows)."""

    kind: str
    choice: str
    candidates: dict[str, dict[str, Any]] | None = None


@dataclass(frozen=True, kw_only=True)
class Estimates(_Record):
    """The ``estimates`` section: evaluation time from the counts (``cost_model``)."""

    evaluation_seconds: float
    images_per_evaluation: int
    ms_per_image: float
    basis: str


@dataclass(frozen=True, kw_only=True)
class ProgramFigures(_Record):
    """The figures of one lowered program. ``memory`` is set in batch packing; the three
    choices in slot packing."""

    packing: str
    ckks: CkksParameters
    totals: Totals
    layers: list[Layer]
    memory: BatchMemory | None = None
    rotation_indices: list[int]
    input_layout: Choice | None = None
    output_layouts: Choice | None = None
    readout: Choice | None = None
    # the scale and first prime chosen for --precision: target, bits, predicted error, largest
    # value seen (``backend_openfhe.precision``); absent where the options fixed the bits
    precision: dict[str, Any] | None = None
    # a program deeper than one modulus chain (``place-bootstraps``): the level budget, the
    # bootstrapping keys (estimated) and ``each`` bootstrap: where it is, the levels it
    # refreshes from and to, why; absent in a leveled program
    bootstraps: dict[str, Any] | None = None
    # a slot program past --memory-limit (``search.within_memory``): the limit, the estimated
    # peak and rotation keys and rotations before and after composing; absent where it fit
    memory_plan: dict[str, Any] | None = None

    NESTED: ClassVar[dict[str, type[_Record]]] = {
        "ckks": CkksParameters,
        "totals": Totals,
        "layers": Layer,
        "memory": BatchMemory,
        "input_layout": Choice,
        "output_layouts": Choice,
        "readout": Choice,
    }


@dataclass(frozen=True, kw_only=True)
class ProgramReport(ProgramFigures):
    """``report.json``: the program's figures and what ``compile()`` knows of the model.

    Free-form parts: ``activations`` (one row per replaced activation or normalization),
    ``inputs_outside`` (calibration inputs outside the fitted intervals), ``accuracy``
    (calibration labels given) and ``pruning`` (``--prune``).
    """

    schema_version: int = SCHEMA_VERSION
    model: str
    input_shape: list[int]
    output_shape: list[int]
    estimates: Estimates
    activations: list[dict[str, Any]]
    compile_seconds: float
    client_tail: list[str]
    inputs_outside: dict[str, Any] | None = None
    accuracy: dict[str, Any] | None = None
    pruning: dict[str, Any] | None = None
    # how the program was chosen: ``lowerings`` that ran (``hec.search``), ``plan`` "searched"
    # or "recorded" (replayed from the model's metadata)
    search: dict[str, Any] | None = None

    NESTED: ClassVar[dict[str, type[_Record]]] = {
        **ProgramFigures.NESTED,
        "estimates": Estimates,
    }

    def key_order(self) -> tuple[str, ...]:
        figures = tuple(f.name for f in fields(ProgramFigures))
        head = ("schema_version", "model", "input_shape", "output_shape")
        tail = tuple(f.name for f in fields(self) if f.name not in figures and f.name not in head)
        return (*head, *figures, *tail)

    @classmethod
    def from_dict(cls, data: Any, where: str = REPORT_FILE) -> ProgramReport:
        """The report in ``data``. A dict without ``schema_version`` is taken for one that
        ``compile()`` is assembling and gets this version (``read`` refuses a file without
        one); another version is refused."""
        if isinstance(data, dict):
            version = data.get("schema_version", SCHEMA_VERSION)
            if version != SCHEMA_VERSION:
                raise ArtifactError(
                    f"{where}: report schema version {version}, this hec reads version "
                    f"{SCHEMA_VERSION}; compile the model again with this hec"
                )
            data = {"schema_version": SCHEMA_VERSION, **data}
        return super().from_dict(data, where)

    @classmethod
    def read(cls, path: str | Path) -> ProgramReport:
        """Read ``report.json`` (or the one in the artifact directory ``path``)."""
        path = Path(path)
        if path.is_dir():
            path = path / REPORT_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{path}: unreadable report ({exc}); compile it again") from None
        if isinstance(data, dict) and "schema_version" not in data:
            raise ArtifactError(
                f"{path}: report written before report schemas (no schema_version); "
                "compile the model again with this hec"
            )
        return cls.from_dict(data, str(path))

    def write(self, path: str | Path) -> Path:
        """Write ``report.json`` (into the directory ``path``, if it is one); returns the file."""
        path = Path(path)
        if path.is_dir():
            path = path / REPORT_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

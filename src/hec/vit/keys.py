"""Secret keys of block-wise image encryption: a seed plus the block settings it expands into.

A key does four things to an image cut into ``patch x patch`` blocks (the ViT patch size):

* **block scrambling** — a permutation of the blocks;
* **pixel shuffling** — a permutation of the ``L = patch * patch * channels`` values of each
  flattened block (flattened in ``(row, column, channel)`` order). A *restricted* shuffle with group
  size ``G`` splits the flattened block into ``L / G`` runs of ``G`` consecutive values and permutes
  only inside each run (a block-diagonal permutation matrix): ``G = 1`` is no shuffle, ``G = L`` is
  unrestricted;
* **negative-positive transformation** — ``x -> max - x`` (``1 - x`` on ``[0, 1]`` data), either for
  key-chosen positions inside each block (``"pixel"``) or for whole key-chosen blocks (``"block"``);
* **colour-channel shuffling** — a permutation of the channels of every pixel.

With ``shared=True`` (the default) every block gets the same pixel shuffle, flip positions and
channel order; this is the setting a model can be adapted to without growing (see ``adapt.py``).
``shared=False`` draws them afresh for every block. The seed drives one ``numpy`` generator whose
draws have a fixed order and size, so switching one transform on or off leaves the others alone.

A key expands (``material()``) into a single gather index plus a flip mask over the flattened
image, so encryption is one ``take`` and one ``where`` whatever the settings.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from hec.vit.errors import KeyFileError

__all__ = ["BlockKey", "KeyMaterial", "KeySpace", "NEGPOS_MODES", "load_key", "save_key"]

NEGPOS_MODES = ("none", "pixel", "block")
_FORMAT = "hec-vit-key"
_VERSION = 1


@dataclass(frozen=True)
class KeyMaterial:
    """The arrays a key expands into, in block terms.

    Attributes:
        block_perm: ``(nb,)``; encrypted block ``k`` holds plain block ``block_perm[k]``.
        perm: ``(nb, L)``; value ``i`` of encrypted block ``k`` is value ``perm[k, i]`` of that
            plain block (pixel and channel shuffling composed), before the flip.
        flip: ``(nb, L)`` bool; where true the value is replaced by ``max - value``.
    """

    block_perm: np.ndarray
    perm: np.ndarray
    flip: np.ndarray

    @property
    def uniform(self) -> bool:
        """True when all blocks share shuffle and flips (only scrambling varies by block)."""
        return bool((self.perm == self.perm[:1]).all() and (self.flip == self.flip[:1]).all())


@dataclass(frozen=True)
class KeySpace:
    """How many keys a setting has: log2 of each component's count and of their product.

    The product counts distinct keys; distinct *encryptions* can be fewer where components overlap
    (a colour shuffle followed by an unrestricted pixel shuffle is just another pixel shuffle).
    """

    components: tuple[tuple[str, float], ...]

    @property
    def log2_total(self) -> float:
        return sum(bits for _, bits in self.components)

    def describe(self) -> str:
        """One line per component and a total, e.g. ``block scrambling: 16! = 2^44.3``."""
        lines = [f"  {name}: 2^{bits:.1f}" for name, bits in self.components]
        total = self.log2_total
        lines.append(f"  total: 2^{total:.1f} (about 10^{total * math.log10(2):.1f}) keys")
        return "\n".join(lines)


def _log2_factorial(n: int) -> float:
    return math.lgamma(n + 1) / math.log(2)


@dataclass(frozen=True)
class BlockKey:
    """A block-wise encryption key: a seed and the settings it is expanded under.

    Attributes:
        seed: the secret; any non-negative integer (128 random bits from ``generate``).
        image_size: ``(H, W)``; both multiples of ``patch``.
        channels: channels per pixel.
        patch: block size in pixels; equals the ViT patch size.
        restrict: group size ``G`` of the restricted pixel shuffle; divides ``L``. ``None`` means
            ``L`` (unrestricted).
        block_scramble, pixel_shuffle, channel_shuffle: which transforms are on.
        negpos: ``"none"``, ``"pixel"`` (key-chosen positions in each block) or ``"block"``
            (key-chosen whole blocks).
        shared: the same pixel shuffle / flips / channel order for every block.
    """

    seed: int
    image_size: tuple[int, int]
    channels: int
    patch: int
    restrict: int | None = None
    block_scramble: bool = True
    pixel_shuffle: bool = True
    negpos: str = "pixel"
    channel_shuffle: bool = True
    shared: bool = True
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        h, w = self.image_size
        if self.patch < 1 or self.channels < 1 or h < 1 or w < 1:
            raise KeyFileError(
                f"key: patch, channels and image size must be positive, got "
                f"patch={self.patch} channels={self.channels} size={h}x{w}"
            )
        if h % self.patch or w % self.patch:
            raise KeyFileError(
                f"key: image size {h}x{w} is not a multiple of the block size "
                f"{self.patch}; crop or pad the images, or choose another --patch"
            )
        if self.negpos not in NEGPOS_MODES:
            raise KeyFileError(
                f"key: negpos must be one of {', '.join(NEGPOS_MODES)}, got {self.negpos!r}"
            )
        if self.restrict is not None and (self.restrict < 1 or self.block_len % self.restrict):
            raise KeyFileError(
                f"key: --restrict {self.restrict} must divide the flattened block "
                f"length {self.block_len} (= {self.patch}*{self.patch}*"
                f"{self.channels})"
            )
        if self.seed < 0:
            raise KeyFileError("key: seed must be a non-negative integer")

    # --- sizes -------------------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int]:
        """Blocks per column and per row."""
        return self.image_size[0] // self.patch, self.image_size[1] // self.patch

    @property
    def num_blocks(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def block_len(self) -> int:
        """``L``: values in one flattened block."""
        return self.patch * self.patch * self.channels

    @property
    def group(self) -> int:
        """The effective pixel-shuffle group size (1 when pixel shuffling is off)."""
        if not self.pixel_shuffle:
            return 1
        return self.block_len if self.restrict is None else self.restrict

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        return (self.channels, *self.image_size)

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def generate(
        cls, image_size: tuple[int, int], channels: int, patch: int, **settings: Any
    ) -> BlockKey:
        """A key with a fresh 128-bit seed from the operating system's entropy; ``settings``: the
        other fields (checked when the key is built)."""
        entropy = np.random.SeedSequence().entropy
        assert isinstance(entropy, int)  # drawn from the OS when none is given: one integer
        return cls(
            seed=int(entropy) % (1 << 128),
            image_size=image_size,
            channels=channels,
            patch=patch,
            **settings,
        )

    def spawn(self, n: int) -> list[BlockKey]:
        """``n`` independent keys with these settings, derived from this key's seed.

        This is how a client draws a disposable key per image: keeping this key lets it decrypt its
        own images later; throwing it away throws all ``n`` away.
        """
        children = np.random.SeedSequence(self.seed).spawn(n)
        return [replace(self, seed=_seed_int(c)) for c in children]

    # --- key space -----------------------------------------------------------------------------
    def key_space(self) -> KeySpace:
        """The number of keys of this setting, by component."""
        rows = 1 if self.shared else self.num_blocks
        comps: list[tuple[str, float]] = []
        if self.block_scramble:
            comps.append(
                (f"block scrambling ({self.num_blocks}!)", _log2_factorial(self.num_blocks))
            )
        g = self.group
        if g > 1:
            groups = self.block_len // g
            comps.append(
                (
                    f"pixel shuffling (G={g}: ({g}!)^{groups * rows})",
                    groups * rows * _log2_factorial(g),
                )
            )
        if self.negpos == "pixel":
            comps.append(
                (
                    f"negative-positive per position (2^{self.block_len * rows})",
                    float(self.block_len * rows),
                )
            )
        elif self.negpos == "block":
            comps.append(
                (f"negative-positive per block (2^{self.num_blocks})", float(self.num_blocks))
            )
        if self.channel_shuffle and self.channels > 1:
            comps.append(
                (
                    f"colour shuffling (({self.channels}!)^{rows})",
                    rows * _log2_factorial(self.channels),
                )
            )
        return KeySpace(tuple(comps))

    # --- expansion -----------------------------------------------------------------------------
    def material(self) -> KeyMaterial:
        """Expand the seed into block permutation, per-block value permutation and flip mask."""
        if "material" not in self._cache:
            self._cache["material"] = self._expand()
        return self._cache["material"]

    def _expand(self) -> KeyMaterial:
        nb, length, c = self.num_blocks, self.block_len, self.channels
        rows = 1 if self.shared else nb
        # Every draw happens whatever the settings, in a fixed order and size, so switching one
        # transform on or off (or changing G) leaves the others unchanged.
        rng = np.random.default_rng(self.seed)
        u_block = rng.random(nb)
        u_pix = rng.random((rows, length))
        u_flip = rng.random((rows, length))
        u_flip_block = rng.random(nb)
        u_chan = rng.random((rows, c))

        block_perm = u_block.argsort() if self.block_scramble else np.arange(nb)
        g = self.group
        # Restricted permutation: argsort of the uniforms within each run of G positions.
        runs = u_pix.reshape(rows, length // g, g).argsort(axis=-1)
        pix = (runs + np.arange(0, length, g)[None, :, None]).reshape(rows, length)
        chan = u_chan.argsort(axis=-1) if self.channel_shuffle else np.tile(np.arange(c), (rows, 1))
        # Position (py, px, ch) reads channel chan[ch] of the same pixel.
        chan_map = (np.arange(length) // c * c)[None, :] + np.tile(chan, (1, length // c))
        # Channel shuffle first, then pixel shuffle: e[i] = z[pix[i]] = y[chan_map[pix[i]]].
        perm = np.take_along_axis(chan_map, pix, axis=1)

        if self.negpos == "pixel":
            flip = u_flip < 0.5
        elif self.negpos == "block":
            flip = np.repeat((u_flip_block < 0.5)[:, None], length, axis=1)
        else:
            flip = np.zeros((rows, length), dtype=bool)
        perm = np.broadcast_to(perm, (nb, length)).copy()
        flip = np.broadcast_to(flip, (nb, length)).copy()
        return KeyMaterial(block_perm=block_perm, perm=perm, flip=flip)

    def gather(self, layout: str = "NCHW") -> tuple[np.ndarray, np.ndarray]:
        """The whole encryption as flat-image index and flip mask for ``layout``.

        Returns:
            ``(index, flip)``, each of length ``C*H*W`` in the per-image flattening of ``layout``
            (``CHW`` or ``HWC``): ``encrypted.flat[j] = plain.flat[index[j]]``, then
            ``max - value`` where ``flip[j]``.
        """
        cache_key = ("gather", layout)
        if cache_key not in self._cache:
            self._cache[cache_key] = self._gather(layout)
        return self._cache[cache_key]

    def _gather(self, layout: str) -> tuple[np.ndarray, np.ndarray]:
        mat = self.material()
        flat = block_positions(self, layout)  # (nb, L): flat image position of block value
        index = np.empty(flat.size, dtype=np.intp)
        flip = np.zeros(flat.size, dtype=bool)
        src = flat[mat.block_perm[:, None], mat.perm]  # plain position read by each encrypted slot
        index[flat.ravel()] = src.ravel()
        flip[flat.ravel()] = mat.flip.ravel()
        return index, flip

    # --- files ---------------------------------------------------------------------------------
    def to_json(self) -> dict:
        """The key file's content (``save_key`` writes it)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        d["image_size"] = list(self.image_size)
        return {"format": _FORMAT, "version": _VERSION, **d}


def block_positions(key: BlockKey, layout: str = "NCHW") -> np.ndarray:
    """``(nb, L)``: for block ``k`` (row-major grid) and value ``i`` (``(row, col, ch)`` order), the
    position of that value in one image flattened as ``CHW`` (``NCHW``) or ``HWC`` (``NHWC``)."""
    return _block_positions(key.channels, key.image_size, key.patch, layout)


@functools.lru_cache(maxsize=64)
def _block_positions(c: int, size: tuple[int, int], p: int, layout: str) -> np.ndarray:
    h, w = size
    gh, gw = h // p, w // p
    if layout == "NCHW":
        pos = np.arange(c * h * w).reshape(c, gh, p, gw, p).transpose(1, 3, 2, 4, 0)
    elif layout == "NHWC":
        pos = np.arange(h * w * c).reshape(gh, p, gw, p, c).transpose(0, 2, 1, 3, 4)
    else:
        raise ValueError(f"layout must be NCHW or NHWC, got {layout!r}")
    pos = pos.reshape(gh * gw, p * p * c)
    pos.flags.writeable = False  # shared by every caller through the cache
    return pos


def _seed_int(seq: np.random.SeedSequence) -> int:
    return int.from_bytes(seq.generate_state(4, np.uint32).tobytes(), "little")


def save_key(key: BlockKey, path: str | Path) -> None:
    """Write ``key`` as JSON (the seed is the secret: keep the file private or delete it)."""
    Path(path).write_text(json.dumps(key.to_json(), indent=2) + "\n")


def load_key(path: str | Path) -> BlockKey:
    """Read a key file written by ``save_key`` / ``hec vit keygen``.

    Raises:
        KeyFileError: the file is missing, not JSON, or not a valid key.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise KeyFileError(
            f"{path}: key file not found; create one with 'hec vit keygen'"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyFileError(
            f"{path}: not a readable JSON key file ({exc}); regenerate it with 'hec vit keygen'"
        ) from None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise KeyFileError(
            f'{path}: not a hec ViT key (no "format": "{_FORMAT}"); '
            f"regenerate it with 'hec vit keygen'"
        )
    if data.get("version") != _VERSION:
        raise KeyFileError(
            f"{path}: key version {data.get('version')!r} is not supported (expected {_VERSION})"
        )
    names = {f.name for f in fields(BlockKey) if f.init}
    missing = sorted(names - data.keys())
    if missing:
        raise KeyFileError(f"{path}: key file lacks {', '.join(missing)}; regenerate it")
    try:
        _check_types(data)
        return BlockKey(**{k: data[k] for k in names})
    except KeyFileError as exc:
        raise KeyFileError(f"{path}: {exc}") from None


def _check_types(d: dict) -> None:
    ints = ["seed", "channels", "patch"]
    bools = ["block_scramble", "pixel_shuffle", "channel_shuffle", "shared"]
    bad = [k for k in ints if type(d[k]) is not int] + [k for k in bools if type(d[k]) is not bool]
    size = d["image_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(type(s) is int for s in size)):
        bad.append("image_size")
    if d["restrict"] is not None and type(d["restrict"]) is not int:
        bad.append("restrict")
    if not isinstance(d["negpos"], str):
        bad.append("negpos")
    if bad:
        raise KeyFileError(f"key fields of the wrong type: {', '.join(bad)}")

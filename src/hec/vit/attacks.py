"""Ciphertext-only attacks on block-wise encrypted images, to measure what the encryption hides.

Two attackers, each seeing one encrypted image and knowing the block size (never the key):

* **Jigsaw solver** (after Chuman, Kiya et al.'s jigsaw-puzzle attacks on block scrambling):
  treats the encrypted blocks as puzzle pieces and reassembles them greedily by edge
  compatibility (how well each piece's border predicts its neighbour's), optionally trying both
  polarities of every piece against whole-block negative-positive. Before solving it can undo
  per-position negative-positive with the statistics below.
* **Per-block statistics**: pixel shuffling and colour shuffling permute values *within* a block,
  so anything symmetric in them survives — above all the block mean. When every block shares the
  same flip positions (a shared key, per-position negative-positive), the flipped positions are
  the ones anti-correlated with the others across blocks: the sign pattern of the first principal
  component of the block vectors finds them, up to one global sign. Undoing it gives each block's
  mean: a thumbnail of the image at one pixel per block, in the encrypted block order.

Recovery is scored against the plain image: the fraction of blocks the solver puts in their true
place and of true neighbour pairs it restores, and the correlation (absolute value: an image and
its negative read the same) between the attacker's thumbnail and the plain thumbnail at the
positions the attacker assigns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hec.vit.keys import BlockKey

__all__ = [
    "JigsawResult",
    "estimate_flips",
    "solve_jigsaw",
    "thumbnail_attack",
    "AttackScores",
    "score_attacks",
]


def _blocks(image: np.ndarray, patch: int) -> np.ndarray:
    """``(C, H, W)`` -> ``(nb, C, P, P)`` in row-major grid order."""
    c, h, w = image.shape
    gh, gw = h // patch, w // patch
    return (
        image.reshape(c, gh, patch, gw, patch)
        .transpose(1, 3, 0, 2, 4)
        .reshape(gh * gw, c, patch, patch)
    )


def _unblocks(blocks: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    gh, gw = grid
    _, c, p, _ = blocks.shape
    return blocks.reshape(gh, gw, c, p, p).transpose(2, 0, 3, 1, 4).reshape(c, gh * p, gw * p)


def estimate_flips(image: np.ndarray, patch: int) -> np.ndarray:
    """Guess which in-block positions a shared key flipped: ``(C*P*P,)`` bool in ``(C, P, P)``
    order, up to one global inversion. Uses the sign of each position's loading on the first
    principal component of the image's block vectors (natural images: all positions of a block
    move together, so flipped ones load with the opposite sign)."""
    vec = _blocks(image, patch).reshape(-1, image.shape[0] * patch * patch).astype(np.float64)
    vec = vec - vec.mean(axis=0)
    if not vec.any():
        return np.zeros(vec.shape[1], dtype=bool)
    _, _, vt = np.linalg.svd(vec, full_matrices=False)
    pc = vt[0]
    # Convention: the majority keeps its polarity.
    return (pc < 0) if (pc >= 0).sum() >= (pc < 0).sum() else (pc > 0)


def thumbnail_attack(
    image: np.ndarray, patch: int, max_value: float = 1.0, unflip: bool | None = None
) -> np.ndarray:
    """The attacker's ``(gh, gw)`` thumbnail: each encrypted block's mean.

    Args:
        unflip: first undo the flips ``estimate_flips`` finds. ``None`` decides per image: the
            smoother thumbnail wins (natural images are smooth; a wrong unflip adds noise).
    """
    c, h, w = image.shape
    blocks = _blocks(image, patch).reshape(-1, c * patch * patch).astype(np.float64)
    candidates: list[np.ndarray] = []
    if unflip is not True:
        candidates.append(blocks)
    if unflip is not False:
        flips = estimate_flips(image, patch)
        candidates.append(np.where(flips, max_value - blocks, blocks))
    thumbs = [b.mean(axis=1).reshape(h // patch, w // patch) for b in candidates]
    return min(thumbs, key=_roughness)


def _roughness(t: np.ndarray) -> float:
    """Total variation relative to spread (scale-free; flat thumbnails count as smooth)."""
    spread = float(t.std())
    if spread == 0:
        return 0.0
    tv = np.abs(np.diff(t, axis=0)).sum() + np.abs(np.diff(t, axis=1)).sum()
    return float(tv) / (spread * t.size)


@dataclass(frozen=True)
class JigsawResult:
    """``placement[r, c]``: the encrypted block the solver put at grid cell ``(r, c)``;
    ``inverted[r, c]``: whether it chose the piece's negative; ``image``: the reassembly."""

    placement: np.ndarray
    inverted: np.ndarray
    image: np.ndarray


def _compat(pieces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dissimilarity of piece ``a`` left of ``b`` and of ``a`` above ``b`` (prediction-based:
    each border extrapolated one pixel must meet the neighbour's border, both ways)."""

    def edge(
        a_last: np.ndarray, a_prev: np.ndarray, b_first: np.ndarray, b_next: np.ndarray
    ) -> np.ndarray:
        n = len(a_last)
        fa = (2 * a_last - a_prev).reshape(n, -1)
        fb = (2 * b_first - b_next).reshape(n, -1)
        al, bf = a_last.reshape(n, -1), b_first.reshape(n, -1)
        d1 = np.abs(fa[:, None, :] - bf[None, :, :]).sum(-1)
        d2 = np.abs(fb[None, :, :] - al[:, None, :]).sum(-1)
        return d1 + d2

    p = pieces.shape[-1]
    prev, nxt = (p - 2, 1) if p > 1 else (0, 0)
    d_lr = edge(pieces[..., :, -1], pieces[..., :, prev], pieces[..., :, 0], pieces[..., :, nxt])
    d_tb = edge(pieces[..., -1, :], pieces[..., prev, :], pieces[..., 0, :], pieces[..., nxt, :])
    # Relative to each piece's second-best match: a fit counts by how much it beats the
    # alternatives, which is what makes flat regions (many equal fits) less misleading.
    out = []
    for d in (d_lr, d_tb):
        d = d + np.eye(len(d)) * 1e9
        second = np.minimum(np.sort(d, axis=1)[:, 1:2], np.sort(d, axis=0)[1:2, :])
        out.append(d / (second + 1e-6))
    return out[0], out[1]


def solve_jigsaw(
    image: np.ndarray,
    patch: int,
    *,
    polarity: bool = False,
    unflip: bool = False,
    max_value: float = 1.0,
    seeds: int = 6,
) -> JigsawResult:
    """Reassemble an encrypted image's blocks by edge compatibility (greedy placement).

    Starting from a seed piece, repeatedly fill the empty cell next to the placed pieces, inside
    the known frame, with the piece (and polarity, if ``polarity``) that fits its placed
    neighbours best; the best of ``seeds`` starts (lowest total border cost) is returned.

    Args:
        image: one encrypted ``(C, H, W)`` image.
        patch: block size.
        polarity: also try each piece inverted (``max_value - piece``), against whole-block
            negative-positive.
        unflip: first undo per-position flips found by ``estimate_flips``.
    """
    c, h, w = image.shape
    gh, gw = h // patch, w // patch
    work = image.astype(np.float64)
    if unflip:
        flips = estimate_flips(image, patch).reshape(c, patch, patch)
        blocks = _blocks(work, patch)
        blocks = np.where(flips[None], max_value - blocks, blocks)
        work = _unblocks(blocks, (gh, gw))
    pieces = _blocks(work, patch)
    n = len(pieces)
    states = np.concatenate([pieces, max_value - pieces]) if polarity else pieces
    d_lr, d_tb = _compat(states)
    owner = np.arange(len(states)) % n
    # Seeds: the pieces whose best right-hand match is most distinct from their second best.
    srt = np.sort(d_lr + np.eye(len(states)) * 1e18, axis=1)
    confidence = srt[:, 1] / (srt[:, 0] + 1e-9)
    starts = np.argsort(-confidence[:n])[:seeds]
    best: tuple[dict[tuple[int, int], int], float] | None = None
    for s in starts:
        cells, cost = _grow(int(s), d_lr, d_tb, owner, n, (gh, gw))
        if best is None or cost < best[1]:
            best = (cells, cost)
    if best is None:
        raise ValueError("the jigsaw solver needs at least one seed")
    cells = best[0]
    rows = [r for r, _ in cells]
    cols = [c_ for _, c_ in cells]
    r0, c0 = min(rows), min(cols)
    placement = np.zeros((gh, gw), dtype=np.int64)
    inverted = np.zeros((gh, gw), dtype=bool)
    for (r, cc), state in cells.items():
        placement[r - r0, cc - c0] = owner[state]
        inverted[r - r0, cc - c0] = state >= n
    out_blocks = states[(placement + n * inverted).ravel()]
    return JigsawResult(placement, inverted, _unblocks(out_blocks, (gh, gw)))


def _grow(
    seed: int, d_lr: np.ndarray, d_tb: np.ndarray, owner: np.ndarray, n: int, frame: tuple[int, int]
) -> tuple[dict[tuple[int, int], int], float]:
    gh, gw = frame
    cells: dict[tuple[int, int], int] = {(0, 0): seed}
    used = np.zeros(n, dtype=bool)
    used[owner[seed]] = True
    total = 0.0
    inf = np.inf
    while len(cells) < n:
        rows = [r for r, _ in cells]
        cols = [c for _, c in cells]
        best: tuple[float, tuple[int, int] | None, int | None] = (inf, None, None)
        free = ~used[owner]
        for r, c in {
            (r + dr, c + dc) for r, c in cells for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0))
        } - cells.keys():
            if max(max(rows), r) - min(min(rows), r) >= gh:
                continue
            if max(max(cols), c) - min(min(cols), c) >= gw:
                continue
            cost: np.ndarray = np.zeros(len(owner))
            k = 0
            if (r, c - 1) in cells:
                cost += d_lr[cells[(r, c - 1)]]
                k += 1
            if (r, c + 1) in cells:
                cost += d_lr[:, cells[(r, c + 1)]]
                k += 1
            if (r - 1, c) in cells:
                cost += d_tb[cells[(r - 1, c)]]
                k += 1
            if (r + 1, c) in cells:
                cost += d_tb[:, cells[(r + 1, c)]]
                k += 1
            # Cells with more placed neighbours are more certain: average, then favour them.
            cost = np.where(free, cost / k - 1e-6 * k, inf)
            j = int(np.argmin(cost))
            if cost[j] < best[0]:
                best = (cost[j], (r, c), j)
        least, cell, piece = best
        # while pieces are left, one of them fits a free cell at a finite cost
        assert cell is not None and piece is not None
        cells[cell] = piece
        used[owner[piece]] = True
        total += least
    return cells, total


@dataclass(frozen=True)
class AttackScores:
    """Recovery of one setting, averaged over images (1.0 = fully recovered, 0 = nothing).

    Attributes:
        jigsaw_direct: fraction of blocks the solver puts in their true cell.
        jigsaw_neighbours: fraction of true neighbour pairs it restores.
        jigsaw_pixels: |correlation| of the reassembled image with the plain image.
        thumbnail: |correlation| of the statistics attacker's thumbnail with the plain one.
    """

    jigsaw_direct: float
    jigsaw_neighbours: float
    jigsaw_pixels: float
    thumbnail: float


def _abs_corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float(abs((a * b).sum()) / den) if den > 0 else 0.0


def score_attacks(
    plain: np.ndarray, keys: list[BlockKey], encrypted: np.ndarray, max_value: float = 1.0
) -> AttackScores:
    """Run both attacks on each encrypted image (float, NCHW) and score them against ``plain``.

    The attacker knows the scheme's settings but not the key (Kerckhoffs): it undoes
    per-position flips only if the settings have them, and tries both polarities of each piece
    only under whole-block negative-positive. ``keys`` are used for scoring alone.
    """
    direct, neigh, pix, thumb = [], [], [], []
    for x, key, e in zip(plain, keys, encrypted, strict=True):
        p = key.patch
        gh, gw = key.grid
        source = key.material().block_perm  # encrypted block k came from plain block source[k]
        flips = key.negpos == "pixel" and key.shared
        res = solve_jigsaw(e, p, polarity=key.negpos == "block", unflip=flips, max_value=max_value)
        truth = source[res.placement]  # plain position of the block at each cell
        direct.append(float((truth == np.arange(gh * gw).reshape(gh, gw)).mean()))
        pairs = []
        if gw > 1:
            pairs.append((truth[:, 1:] == truth[:, :-1] + 1).ravel())
        if gh > 1:
            pairs.append((truth[1:, :] == truth[:-1, :] + gw).ravel())
        neigh.append(float(np.concatenate(pairs).mean()) if pairs else 1.0)
        pix.append(_abs_corr(res.image, x))
        plain_thumb = _blocks(x, p).reshape(gh * gw, -1).mean(axis=1).reshape(gh, gw)
        thumb.append(_abs_corr(thumbnail_attack(e, p, max_value, unflip=flips), plain_thumb))
    return AttackScores(*(float(np.mean(v)) for v in (direct, neigh, pix, thumb)))

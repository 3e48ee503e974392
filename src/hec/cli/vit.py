"""``hec vit``: block-wise image encryption with disposable keys for Vision Transformers.

Heavy modules (numpy, onnx, onnxruntime, torch) are imported inside the commands so that
``hec --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hec.errors import InputError

if TYPE_CHECKING:
    import numpy as np

    from hec.vit.keys import BlockKey

__all__ = ["vit"]

_LAYOUT = click.Choice(["NCHW", "NHWC"])


@click.group("vit")
def vit() -> None:
    """ViT block-wise image encryption: keys, encryption, model adaptation, training, attacks."""


@vit.command("keygen")
@click.option(
    "--image-size",
    nargs=2,
    type=int,
    required=True,
    metavar="H W",
    help="Image height and width (multiples of --patch).",
)
@click.option("--channels", type=int, default=1, show_default=True)
@click.option("--patch", type=int, required=True, help="Block size = the ViT's patch size.")
@click.option(
    "--seed", type=int, default=None, help="The secret; default: 128 fresh random bits from the OS."
)
@click.option(
    "--restrict",
    "restrict",
    type=int,
    default=None,
    metavar="G",
    help="Shuffle pixels only within groups of G values (1 = no shuffle; default: the "
    "whole flattened block).",
)
@click.option("--no-block-scramble", is_flag=True, help="Keep blocks in place.")
@click.option("--no-pixel-shuffle", is_flag=True, help="Do not shuffle values inside blocks.")
@click.option(
    "--negpos",
    type=click.Choice(["none", "pixel", "block"]),
    default="pixel",
    show_default=True,
    help="Negative-positive: key-chosen positions in every block, key-chosen whole blocks, or off.",
)
@click.option("--no-channel-shuffle", is_flag=True, help="Keep colour channels in order.")
@click.option(
    "--per-block",
    is_flag=True,
    help="Draw shuffle/flips/channel order per block (a model adapted to such a key "
    "grows a per-position embedding).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def keygen(
    image_size: tuple[int, int],
    channels: int,
    patch: int,
    seed: int | None,
    restrict: int | None,
    no_block_scramble: bool,
    no_pixel_shuffle: bool,
    negpos: str,
    no_channel_shuffle: bool,
    per_block: bool,
    output: Path,
) -> None:
    """Write a key file and print the size of its key space."""
    from hec.vit.keys import BlockKey, save_key

    settings: dict[str, Any] = dict(
        image_size=image_size,
        channels=channels,
        patch=patch,
        restrict=restrict,
        block_scramble=not no_block_scramble,
        pixel_shuffle=not no_pixel_shuffle,
        negpos=negpos,
        channel_shuffle=not no_channel_shuffle,
        shared=not per_block,
    )
    key = BlockKey.generate(**settings) if seed is None else BlockKey(seed=seed, **settings)
    save_key(key, output)
    click.echo(
        f"wrote {output}: {channels}x{image_size[0]}x{image_size[1]} images, "
        f"{patch}x{patch} blocks ({key.num_blocks} blocks of {key.block_len} values), "
        f"shuffle group G={key.group}"
    )
    click.echo("key space:\n" + key.key_space().describe())


def _load_images(path: Path) -> np.ndarray:
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None


def _crypt(
    key_path: Path,
    src: Path,
    dst: Path,
    layout: str,
    per_image: bool,
    max_value: float | None,
    inverse: bool,
) -> None:
    from hec.vit.errors import ImageShapeError
    from hec.vit.keys import load_key
    from hec.vit.transforms import decrypt, encrypt

    key = load_key(key_path)
    images = _load_images(src)
    keys: BlockKey | list[BlockKey] = key
    if per_image:
        if images.ndim != 4:
            raise ImageShapeError(f"{src}: --per-image needs a batch (N, ...) of images")
        keys = key.spawn(images.shape[0])
    try:
        out = (decrypt if inverse else encrypt)(images, keys, layout=layout, max_value=max_value)
    except ImageShapeError as exc:
        raise ImageShapeError(f"{src}: {exc}") from None
    import numpy as np

    np.save(dst, out)
    what = "decrypted" if inverse else "encrypted"
    click.echo(
        f"{what} {out.shape[0] if out.ndim == 4 else 1} image(s) -> {dst}"
        + (" (one key per image, derived from the key file)" if per_image else "")
    )


_crypt_options = [
    click.option(
        "--key",
        "key_path",
        type=click.Path(dir_okay=False, path_type=Path),
        required=True,
        help="Key file from 'hec vit keygen'.",
    ),
    click.option("--layout", type=_LAYOUT, default="NCHW", show_default=True),
    click.option(
        "--per-image",
        is_flag=True,
        help="Use a different key per image, derived from the key file's seed "
        "(disposable keys: delete the key file to throw them all away).",
    ),
    click.option(
        "--max-value",
        type=float,
        default=None,
        help="Negative-positive computes max - x (default 1 for floats, 255 for uint8).",
    ),
    click.argument("src", type=click.Path(dir_okay=False, path_type=Path)),
    click.argument("dst", type=click.Path(dir_okay=False, path_type=Path)),
]


def _with_crypt_options(f):  # noqa: ANN001, ANN202
    for option in reversed(_crypt_options):
        f = option(f)
    return f


@vit.command("encrypt-images")
@_with_crypt_options
def encrypt_images(
    key_path: Path, layout: str, per_image: bool, max_value: float | None, src: Path, dst: Path
) -> None:
    """Encrypt the images in SRC (.npy) block-wise and write DST (.npy)."""
    _crypt(key_path, src, dst, layout, per_image, max_value, inverse=False)


@vit.command("decrypt-images")
@_with_crypt_options
def decrypt_images(
    key_path: Path, layout: str, per_image: bool, max_value: float | None, src: Path, dst: Path
) -> None:
    """Decrypt the images in SRC (.npy) with the key they were encrypted with."""
    _crypt(key_path, src, dst, layout, per_image, max_value, inverse=True)


@vit.command("adapt")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", "key_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option(
    "--max-value",
    type=float,
    default=1.0,
    show_default=True,
    help="Model-input value negative-positive subtracts from.",
)
@click.option("--no-verify", is_flag=True, help="Skip the onnxruntime equality check.")
def adapt(model: Path, key_path: Path, output: Path, max_value: float, no_verify: bool) -> None:
    """Rewrite MODEL (ONNX ViT) so that on images encrypted with the key it returns the logits
    the original returns on plain images."""
    import onnx

    from hec.errors import ModelError
    from hec.vit.adapt import adapt_model
    from hec.vit.keys import load_key

    key = load_key(key_path)
    try:
        adapted = adapt_model(model, key, max_value=max_value, verify=not no_verify)
    except ModelError as exc:
        msg = str(exc)
        raise type(exc)(msg if msg.startswith(str(model)) else f"{model}: {msg}") from None
    onnx.save(adapted, str(output))
    mode = "per-position embedding" if not key.material().uniform else "same-size embedding"
    check = "" if no_verify else ", checked with onnxruntime"
    click.echo(f"wrote {output} ({mode}{check})")


@vit.command("info")
@click.argument("key_path", metavar="KEY.json", type=click.Path(dir_okay=False, path_type=Path))
def info(key_path: Path) -> None:
    """Print a key's settings, key space and whether a model can be adapted to it."""
    from hec.vit.keys import load_key

    key = load_key(key_path)
    c, h, w = key.image_shape
    click.echo(
        f"{key_path}: {c}x{h}x{w} images, {key.patch}x{key.patch} blocks "
        f"({key.num_blocks} blocks of {key.block_len} values)"
    )
    on = [
        name
        for name, flag in (
            ("block scrambling", key.block_scramble),
            (f"pixel shuffling (G={key.group})", key.group > 1),
            (f"negative-positive ({key.negpos})", key.negpos != "none"),
            ("colour shuffling", key.channel_shuffle and c > 1),
        )
        if flag
    ]
    click.echo(
        "transforms: " + (", ".join(on) or "none") + ("" if key.shared else ", drawn per block")
    )
    adapt = (
        "same-size model"
        if key.material().uniform
        else "per-position embedding (the embedding grows by the number of blocks)"
    )
    click.echo(f"hec vit adapt: {adapt}")
    click.echo("key space:\n" + key.key_space().describe())


@vit.command("attack")
@click.argument("images", metavar="PLAIN.npy", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Settings (and seed) to encrypt PLAIN.npy with.",
)
@click.option("--per-image", is_flag=True, help="One key per image, derived from the key file.")
@click.option(
    "--max-value",
    type=float,
    default=None,
    help="Pixel maximum (default 1 for floats, 255 for uint8).",
)
@click.option("--limit", type=int, default=16, show_default=True, help="Images to attack.")
def attack(
    images: Path, key_path: Path, per_image: bool, max_value: float | None, limit: int
) -> None:
    """Encrypt PLAIN.npy (NCHW) with the key, attack the ciphertexts without it, and report how
    much of the plain images the jigsaw solver and the block-statistics attack recover."""
    import numpy as np

    from hec.vit.attacks import score_attacks
    from hec.vit.errors import ImageShapeError
    from hec.vit.keys import load_key
    from hec.vit.transforms import default_max_value, encrypt

    key = load_key(key_path)
    x = _load_images(images)
    if x.ndim != 4:
        raise ImageShapeError(f"{images}: expected a batch (N, C, H, W) of images")
    x = x[:limit]
    top = default_max_value(x.dtype) if max_value is None else max_value
    xf = x.astype(np.float64) / top
    keys = key.spawn(len(x)) if per_image else [key] * len(x)
    try:
        enc = encrypt(xf, keys if per_image else key)
    except ImageShapeError as exc:
        raise ImageShapeError(f"{images}: {exc}") from None
    s = score_attacks(xf, keys, enc)
    click.echo(
        f"{len(x)} image(s), {key.patch}x{key.patch} blocks; recovered fraction "
        f"(1.0 = all, ~0 = nothing):"
    )
    click.echo(
        f"  jigsaw solver: blocks in place {s.jigsaw_direct:.2f}, neighbours "
        f"{s.jigsaw_neighbours:.2f}, image correlation {s.jigsaw_pixels:.2f}"
    )
    click.echo(f"  block statistics: thumbnail correlation {s.thumbnail:.2f}")


@vit.command("train")
@click.option("--clients", type=int, default=4, show_default=True)
@click.option(
    "--keys", type=click.Choice(["per-image", "per-client"]), default="per-image", show_default=True
)
@click.option("--patch", type=int, default=2, show_default=True)
@click.option("--restrict", type=int, default=2, show_default=True, metavar="G")
@click.option(
    "--negpos", type=click.Choice(["none", "pixel", "block"]), default="none", show_default=True
)
@click.option("--block-scramble", is_flag=True)
@click.option("--per-block", is_flag=True, help="Draw the pixel shuffle per block.")
@click.option("--no-augment", is_flag=True, help="No server-side key augmentation.")
@click.option("--epochs", type=int, default=40, show_default=True)
@click.option("--dim", type=int, default=32, show_default=True)
@click.option("--depth", type=int, default=2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--fedavg-rounds",
    type=int,
    default=20,
    show_default=True,
    help="Rounds the communication comparison assumes.",
)
def train(
    clients: int,
    keys: str,
    patch: int,
    restrict: int,
    negpos: str,
    block_scramble: bool,
    per_block: bool,
    no_augment: bool,
    epochs: int,
    dim: int,
    depth: int,
    seed: int,
    fedavg_rounds: int,
) -> None:
    """Simulate collaborative training on scikit-learn digits with disposable keys (needs
    hec[train]): plain vs encrypted accuracy, and bytes sent against FedAvg."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    from hec.vit.data import digits
    from hec.vit.train import (
        Encryption,
        TrainConfig,
        collaborative_run,
        communication_table,
        plain_run,
    )

    x, y = digits()
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    config = TrainConfig(patch=patch, dim=dim, depth=depth, epochs=epochs, seed=seed, threads=1)
    enc = Encryption(
        restrict=restrict, negpos=negpos, block_scramble=block_scramble, shared=not per_block
    )
    try:
        enc.key(0, xtr.shape[1:], patch)
    except Exception as exc:  # a KeyFileError: bad --patch / --restrict
        raise type(exc)(str(exc).replace("key: ", "")) from None
    plain, model = plain_run(xtr, ytr, xte, yte, config)
    res = collaborative_run(
        xtr,
        ytr,
        xte,
        yte,
        enc,
        config,
        clients=clients,
        keys=keys,
        seed=seed,
        augment=not no_augment,
    )
    click.echo(
        f"digits: {len(xtr)} training images over {clients} clients, {len(xte)} test "
        f"images under fresh keys; patch {patch}, G={restrict}, {keys} keys"
    )
    click.echo(f"  plain training:         accuracy {plain:.4f}")
    click.echo(
        f"  encrypted, disposable:  accuracy {res.accuracy:.4f} ({res.distinct_keys} distinct keys)"
    )
    n_params = int(sum(p.numel() for p in model.parameters()))
    click.echo(f"bytes sent by the clients (model: {n_params} parameters):")
    for name, up, down in communication_table(
        len(xtr), int(np.prod(xtr.shape[1:])), n_params, clients, [fedavg_rounds]
    ):
        click.echo(f"  {name:30s} up {up:>12,d}  down {down:>12,d}")

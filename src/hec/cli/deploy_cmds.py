"""Client and server as separate processes that share only files.

hec keygen  OUT/ --keys KEYDIR                            client: secret + public keys
hec encrypt OUT/ --keys KEYDIR --input X.npy -o X.ct      client: public key only
hec eval    OUT/ --eval-keys KEYDIR/public X.ct -o Y.ct   server: evaluation keys only
hec decrypt OUT/ --keys KEYDIR Y.ct                       client: secret key
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import click

from hec.errors import CiphertextError, KeysError

__all__ = ["keygen_cmd", "encrypt_cmd", "eval_cmd", "decrypt_cmd", "read_ciphertext"]

_ARTIFACT = click.argument("artifact", type=click.Path(path_type=Path))


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def slot_packed(artifact, command: str):
    """Refuse a batch-packed artifact: its requests are one ciphertext per input element,
    which the single-ciphertext file format of these commands does not carry yet."""
    if artifact.program.dialect == "batch":
        from hec.errors import ArtifactError

        raise ArtifactError(
            f"{artifact.path}: batch-packed artifacts run in one process for now (hec run, or "
            f"Client.encrypt_elements / BatchServer / Client.decrypt_elements); hec {command} "
            f"handles slot-packed ones"
        )
    return artifact


def read_ciphertext(path: Path, artifact) -> bytes:
    """Read a ciphertext file, refusing one larger than any ciphertext of ``artifact``."""
    from hec.runtime.ciphertext_file import max_bytes

    if not path.is_file():
        raise CiphertextError(f"{path}: no such file; give a ciphertext written by hec encrypt")
    limit = max_bytes(artifact)
    if path.stat().st_size > limit:
        raise CiphertextError(
            f"{path}: {path.stat().st_size} bytes, more than any ciphertext of this program "
            f"({limit}); not a ciphertext for it"
        )
    return path.read_bytes()


@click.command("keygen")
@_ARTIFACT
@click.option(
    "--keys",
    "keydir",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory to create: KEYDIR/secret (stays here) and KEYDIR/public (for the server).",
)
@click.option("--overwrite", is_flag=True, help="Replace keys already in KEYDIR.")
@click.option(
    "--ignore-resource-check",
    is_flag=True,
    help="Generate keys even if the estimated memory or disk exceeds this machine.",
)
def keygen_cmd(artifact: Path, keydir: Path, overwrite: bool, ignore_resource_check: bool) -> None:
    """Make keys for ARTIFACT (client side): the secret key never leaves KEYDIR/secret."""
    import hec
    from hec.progress import stderr_progress
    from hec.runtime import Client
    from hec.runtime.resources import check_keygen

    art = hec.load_artifact(artifact)
    if ((keydir / "public").exists() or (keydir / "secret").exists()) and not overwrite:
        raise KeysError(
            f"{keydir}: already holds keys (ciphertexts made with them would become "
            f"useless); choose another directory or pass --overwrite"
        )
    check_keygen(art, keydir, ignore=ignore_resource_check)
    if overwrite:  # no stale key file may outlive the keys it belonged to
        import shutil

        for sub in ("public", "secret"):
            shutil.rmtree(keydir / sub, ignore_errors=True)
    progress = stderr_progress()
    start = time.perf_counter()
    client = Client(art, progress=lambda d, n: progress("keygen", d, n))
    seconds = time.perf_counter() - start
    sizes = client.save_keys(keydir)
    click.echo(
        f"keys for {artifact} in {seconds:.1f} s (artifact {art.key_binding}, "
        f"key id {client.key_id[:16]}):"
    )
    notes = {
        "secret/secret_key.bin": "secret: keep it on this machine",
        "public/public_key.bin": "encryption",
        "public/mult_key.bin": "relinearization",
        "public/rotation_keys.bin": f"{len(art.params.rotation_indices)} rotation keys",
        "public/bootstrap_keys.bin": "bootstrapping (loaded for each bootstrap)",
    }
    shown = dict(sizes)
    if art.params.key_groups:  # one file per key: one line for them all
        each = {k: v for k, v in sizes.items() if k.startswith("public/rotation_key.")}
        shown = {k: v for k, v in sizes.items() if k not in each}
        shown["public/rotation_key.*.bin"] = sum(each.values())
        notes["public/rotation_key.*.bin"] = (
            f"{len(each)} rotation keys, one file each, loaded in "
            f"{len(art.params.key_groups)} groups"
        )
    width = max(map(len, shown))
    for name, size in shown.items():
        click.echo(f"  {name:<{width}}  {_mb(size):>9}  {notes.get(name, '')}".rstrip())
    evaluation = sum(v for k, v in sizes.items() if k.startswith("public/"))
    click.echo(f"give the server {keydir / 'public'} ({_mb(evaluation)}; no secret key)")


@click.command("encrypt")
@_ARTIFACT
@click.option("--keys", "keydir", required=True, type=click.Path(path_type=Path))
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(path_type=Path),
    help=".npy with one sample (or up to the program's samples per ciphertext).",
)
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path))
def encrypt_cmd(artifact: Path, keydir: Path, input_path: Path, out: Path) -> None:
    """Encrypt --input for ARTIFACT with the public key in KEYDIR (client side)."""
    import hec
    from hec.cli.results import load_inputs
    from hec.runtime import Client

    art = slot_packed(hec.load_artifact(artifact), "encrypt")
    x = load_inputs(input_path)[0]  # (inputs, labels)
    client = Client.from_keys(art, keydir, secret=False)
    start = time.perf_counter()
    data = client.encrypt_to_bytes(x)
    seconds = time.perf_counter() - start
    out.write_bytes(data)
    click.echo(f"encrypted {input_path} -> {out} ({_mb(len(data))}) in {seconds * 1e3:.0f} ms")


@click.command("eval")
@_ARTIFACT
@click.argument("ciphertext", type=click.Path(path_type=Path))
@click.option(
    "--eval-keys",
    required=True,
    type=click.Path(path_type=Path),
    help="KEYDIR/public from hec keygen (refused if it holds a secret key).",
)
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path))
@click.option(
    "--ignore-resource-check",
    is_flag=True,
    help="Evaluate even if the estimated memory exceeds this machine.",
)
def eval_cmd(
    artifact: Path, ciphertext: Path, eval_keys: Path, out: Path, ignore_resource_check: bool
) -> None:
    """Evaluate ARTIFACT on CIPHERTEXT with evaluation keys only (server side)."""
    import hec
    from hec.progress import stderr_progress
    from hec.runtime import Server
    from hec.runtime.resources import check_server

    art = slot_packed(hec.load_artifact(artifact), "eval")
    check_server(art, workers=1, ignore=ignore_resource_check)
    start = time.perf_counter()
    server = Server.from_eval_keys(art, eval_keys)
    loaded = time.perf_counter() - start
    data = read_ciphertext(ciphertext, art)
    progress = stderr_progress()
    start = time.perf_counter()
    result = server.evaluate_bytes(data, partial(progress, "evaluate"), str(ciphertext))
    seconds = time.perf_counter() - start
    out.write_bytes(result)
    click.echo(
        f"evaluated {ciphertext} ({_mb(len(data))}) -> {out} ({_mb(len(result))}) in "
        f"{seconds:.2f} s (evaluation keys loaded in {loaded:.1f} s)"
    )


@click.command("decrypt")
@_ARTIFACT
@click.argument("ciphertext", type=click.Path(path_type=Path))
@click.option("--keys", "keydir", required=True, type=click.Path(path_type=Path))
@click.option(
    "--output",
    "output_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the logits [n, ...] to this .npy file.",
)
def decrypt_cmd(artifact: Path, ciphertext: Path, keydir: Path, output_path: Path | None) -> None:
    """Decrypt a result CIPHERTEXT of ARTIFACT (client side); print logits and argmax."""
    import numpy as np

    import hec
    from hec.cli.results import print_decrypted
    from hec.runtime import Client

    art = slot_packed(hec.load_artifact(artifact), "decrypt")
    client = Client.from_keys(art, keydir, secret=True)
    dec = client.decrypt_bytes(read_ciphertext(ciphertext, art), str(ciphertext))
    print_decrypted(art, dec)
    if output_path is not None:
        np.save(output_path, dec.values)
        click.echo(f"logits written to {output_path}")

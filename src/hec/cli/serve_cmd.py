"""``hec serve`` (the model owner's HTTP server) and ``hec query`` (the data owner's client)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from hec.errors import InputError

__all__ = ["serve_cmd", "query_cmd"]


@click.command("serve")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option(
    "--eval-keys",
    required=True,
    type=click.Path(path_type=Path),
    help="KEYDIR/public from hec keygen (refused if it holds a secret key).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, help="Port (0: any free port).")
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(1, 1024),
    help="Evaluation processes, each holding the evaluation keys [default: 1; with --ray, "
    "one per core of the cluster].",
)
@click.option(
    "--timeout",
    "timeout_s",
    default=300.0,
    show_default=True,
    type=click.FloatRange(1.0),
    help="Seconds a request may wait and evaluate.",
)
@click.option(
    "--max-queue",
    default=8,
    show_default=True,
    type=click.IntRange(0),
    help="Requests that may wait for a worker; more are answered 503.",
)
@click.option(
    "--ignore-resource-check",
    is_flag=True,
    help="Start even if the workers' estimated memory exceeds this machine.",
)
@click.option(
    "--ray",
    "ray_address",
    default=None,
    metavar="ADDRESS",
    help="Evaluate on the Ray cluster at ADDRESS (HOST:PORT of its head): its workers get "
    "the artifact and the evaluation keys once. Needs hec[ray].",
)
def serve_cmd(
    artifact: Path,
    eval_keys: Path,
    host: str,
    port: int,
    workers: int | None,
    timeout_s: float,
    max_queue: int,
    ignore_resource_check: bool,
    ray_address: str | None,
) -> None:
    """Serve encrypted inference for ARTIFACT over HTTP (server side, evaluation keys only)."""
    import logging
    import sys

    import hec
    from hec.cli.deploy_cmds import slot_packed
    from hec.runtime.resources import check_server
    from hec.runtime.serving import ServeConfig, serve

    if ray_address is not None:
        from hec.runtime.cluster import require_ray

        require_ray()  # before anything else: one line saying how to install it
    art = slot_packed(hec.load_artifact(artifact), "serve")
    # With --ray the workers' memory is the cluster's; this machine only relays bytes.
    local = 1 if ray_address is not None else workers or 1
    est = check_server(art, local, ignore=ignore_resource_check)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: listening on {host} without TLS; put it behind a TLS proxy", err=True)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    # Each worker may use twice the estimate plus room for threads before allocations fail.
    config = ServeConfig(
        workers=workers or (0 if ray_address is not None else 1),
        timeout_s=timeout_s,
        max_queue=max_queue,
        memory_limit=2 * est.server_memory + (4 << 30),
    )

    def ready(url: str, workers: int) -> None:
        where = "" if ray_address is None else f" on the Ray cluster at {ray_address}"
        click.echo(f"serving {artifact} on {url} with {workers} worker(s){where}; Ctrl-C stops")
        sys.stdout.flush()

    serve(art, eval_keys, host, port, config, on_ready=ready, ray=ray_address)


@click.command("query")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.argument("ciphertext", type=click.Path(path_type=Path), required=False)
@click.option("--url", default="http://127.0.0.1:8765", show_default=True)
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write the result ciphertext (with CIPHERTEXT).",
)
@click.option(
    "--keys",
    "keydir",
    type=click.Path(path_type=Path),
    default=None,
    help="With --input: encrypt, send, decrypt and print (client side, all in one).",
)
@click.option("--input", "input_path", type=click.Path(path_type=Path), default=None)
@click.option("--timeout", "timeout_s", default=600.0, show_default=True, type=float)
def query_cmd(
    artifact: Path,
    ciphertext: Path | None,
    url: str,
    out: Path | None,
    keydir: Path | None,
    input_path: Path | None,
    timeout_s: float,
) -> None:
    """Send a ciphertext of ARTIFACT to a hec server and receive the result.

    Either CIPHERTEXT -o RESULT (files, as hec encrypt and hec decrypt read and write them), or
    --keys KEYDIR --input X.npy to encrypt, send and decrypt in one go.
    """
    import hec
    from hec.cli.deploy_cmds import read_ciphertext, slot_packed
    from hec.runtime import ciphertext_file
    from hec.runtime.remote import remote_eval

    art = slot_packed(hec.load_artifact(artifact), "query")
    if ciphertext is not None:
        if out is None or keydir is not None or input_path is not None:
            raise InputError("with CIPHERTEXT give -o RESULT (and neither --keys nor --input)")
        data = read_ciphertext(ciphertext, art)
        header, _ = ciphertext_file.unpack(data, str(ciphertext))
        start = time.perf_counter()
        result = remote_eval(url, data, art.content_hash, str(header.get("key_id")), timeout_s)
        seconds = time.perf_counter() - start
        out.write_bytes(result)
        click.echo(
            f"sent {ciphertext} ({len(data) / 1e6:.1f} MB) to {url}, result {out} "
            f"({len(result) / 1e6:.1f} MB), round trip {seconds:.2f} s"
        )
        return
    if keydir is None or input_path is None:
        raise InputError("give CIPHERTEXT -o RESULT, or --keys KEYDIR --input X.npy")
    from hec.cli.results import load_inputs, print_decrypted
    from hec.runtime import Client

    client = Client.from_keys(art, keydir, secret=True)
    start = time.perf_counter()
    data = client.encrypt_to_bytes(load_inputs(input_path)[0])
    encrypted = time.perf_counter()
    result = remote_eval(url, data, art.content_hash, client.key_id, timeout_s)
    received = time.perf_counter()
    dec = client.decrypt_bytes(result, "server reply")
    done = time.perf_counter()
    print_decrypted(art, dec)
    click.echo(
        f"encrypt {1e3 * (encrypted - start):.0f} ms, round trip through {url} "
        f"{received - encrypted:.2f} s ({len(data) / 1e6:.1f} MB up, {len(result) / 1e6:.1f} MB "
        f"down), decrypt {1e3 * (done - received):.0f} ms"
    )

"""``--ray ADDRESS`` of ``hec run`` and ``hec serve``: one-line errors when Ray is missing or
no cluster answers (the cluster itself: tests/runtime/test_cluster.py)."""

from __future__ import annotations

import socket

import pytest

from cli_helpers import assert_one_line_error, hec
from conftest import EXAMPLE


@pytest.mark.parametrize(
    "args",
    [
        ["run", "ART", "--input", "x.npy", "--ray", "10.0.0.1:6379"],
        ["serve", "ART", "--eval-keys", "keys/public", "--ray", "10.0.0.1:6379"],
    ],
)
def test_without_ray_installed_says_how_to_install_it(args, tmp_path) -> None:
    fake = tmp_path / "ray"  # a `ray` package that cannot be imported, first on the path
    fake.mkdir()
    (fake / "__init__.py").write_text('raise ImportError("no ray here")\n')
    proc = hec(*args, env={"PYTHONPATH": str(tmp_path)})
    assert_one_line_error(proc, "pip install 'hec[ray]'")
    assert proc.returncode == 3


def test_an_address_where_no_cluster_answers_is_one_line(tmp_path) -> None:
    pytest.importorskip("ray")
    assert hec("compile", str(EXAMPLE / "model.onnx"), "-o", str(tmp_path / "art")).returncode == 0
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    x = str(EXAMPLE / "sample.npy")
    proc = hec("run", str(tmp_path / "art"), "--input", x, "--ray", f"127.0.0.1:{port}")
    assert_one_line_error(proc, f"cannot reach the Ray cluster at 127.0.0.1:{port}", "ray start")

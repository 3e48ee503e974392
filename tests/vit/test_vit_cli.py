"""``hec vit`` commands end to end, including the one-line errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from hec.cli.main import main
from hec.vit.onnx_vit import build_vit_onnx

from .vit_testlib import run_onnx


def _hec(*args: str) -> None:
    main([str(a) for a in args])


def test_keygen_encrypt_decrypt_adapt(tmp_path, digits, capsys) -> None:  # noqa: ANN001
    key, plain = tmp_path / "k.json", tmp_path / "plain.npy"
    raw = np.round(digits[:20] * 16).astype(np.uint8)
    np.save(plain, raw)
    _hec("vit", "keygen", "--image-size", 8, 8, "--patch", 2, "--restrict", 2, "-o", key)
    out = capsys.readouterr().out
    assert "block scrambling (16!): 2^44.3" in out and "total: 2^" in out
    for per_image in ([], ["--per-image"]):
        _hec(
            "vit",
            "encrypt-images",
            "--key",
            key,
            "--max-value",
            16,
            *per_image,
            plain,
            tmp_path / "enc.npy",
        )
        enc = np.load(tmp_path / "enc.npy")
        assert enc.shape == raw.shape and not np.array_equal(enc, raw)
        _hec(
            "vit",
            "decrypt-images",
            "--key",
            key,
            "--max-value",
            16,
            *per_image,
            tmp_path / "enc.npy",
            tmp_path / "dec.npy",
        )
        np.testing.assert_array_equal(np.load(tmp_path / "dec.npy"), raw)

    model = tmp_path / "m.onnx"
    onnx.save(build_vit_onnx(seed=3), str(model))
    _hec("vit", "encrypt-images", "--key", key, "--max-value", 16, plain, tmp_path / "enc.npy")
    _hec("vit", "adapt", model, "--key", key, "-o", tmp_path / "a.onnx", "--max-value", 16)
    assert "checked with onnxruntime" in capsys.readouterr().out
    got = run_onnx(onnx.load(str(tmp_path / "a.onnx")), np.load(tmp_path / "enc.npy"))
    np.testing.assert_allclose(got, run_onnx(onnx.load(str(model)), raw), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "case,expected",
    [
        ("missing-key", "nokey.json: key file not found"),
        ("corrupt-key", "bad.json: not a readable JSON key file"),
        ("wrong-shape", "plain.npy: images of shape (3, 1, 8, 8) do not fit the key"),
        ("patch-mismatch", "m4.onnx: node 'pe_conv_node': the model's patch size is 4"),
        ("not-onnx", "bad.json: not a readable ONNX model"),
    ],
)
def test_user_errors_are_one_line(tmp_path, capsys, case, expected) -> None:  # noqa: ANN001
    key = tmp_path / "k.json"
    _hec("vit", "keygen", "--image-size", 8, 8, "--patch", 2, "--channels", 3, "-o", key)
    np.save(tmp_path / "plain.npy", np.zeros((3, 1, 8, 8), np.uint8))
    (tmp_path / "bad.json").write_text("{not json")
    onnx.save(build_vit_onnx(patch=4), str(tmp_path / "m4.onnx"))
    key2 = tmp_path / "k1.json"
    _hec("vit", "keygen", "--image-size", 8, 8, "--patch", 2, "-o", key2)
    capsys.readouterr()
    args = {
        "missing-key": [
            "encrypt-images",
            "--key",
            tmp_path / "nokey.json",
            tmp_path / "plain.npy",
            tmp_path / "o.npy",
        ],
        "corrupt-key": [
            "encrypt-images",
            "--key",
            tmp_path / "bad.json",
            tmp_path / "plain.npy",
            tmp_path / "o.npy",
        ],
        "wrong-shape": ["encrypt-images", "--key", key, tmp_path / "plain.npy", tmp_path / "o.npy"],
        "patch-mismatch": ["adapt", tmp_path / "m4.onnx", "--key", key2, "-o", tmp_path / "a"],
        "not-onnx": ["adapt", tmp_path / "bad.json", "--key", key2, "-o", tmp_path / "a"],
    }[case]
    with pytest.raises(SystemExit) as info:
        _hec("vit", *args)
    assert info.value.code != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert expected in err.replace(str(tmp_path) + "/", "")


def test_info_and_attack(tmp_path, photo_patches, capsys) -> None:  # noqa: ANN001
    key = tmp_path / "k.json"
    _hec(
        "vit",
        "keygen",
        "--image-size",
        16,
        16,
        "--channels",
        3,
        "--patch",
        4,
        "--per-block",
        "--negpos",
        "block",
        "-o",
        key,
    )
    _hec("vit", "info", key)
    out = capsys.readouterr().out
    assert "per-position embedding" in out and "drawn per block" in out
    np.save(tmp_path / "p.npy", photo_patches[:2])
    _hec("vit", "attack", tmp_path / "p.npy", "--key", key, "--per-image", "--limit", 2)
    out = capsys.readouterr().out
    assert "2 image(s)" in out and "thumbnail correlation" in out


@pytest.mark.train
def test_train_command_reports_accuracy_and_bytes(capsys) -> None:  # noqa: ANN001
    pytest.importorskip("torch")
    _hec("vit", "train", "--epochs", 1, "--dim", 16, "--depth", 1, "--fedavg-rounds", 5)
    out = capsys.readouterr().out
    assert "plain training:" in out and "encrypted, disposable:" in out
    assert "FedAvg, 5 rounds" in out and "1257 training images over 4 clients" in out

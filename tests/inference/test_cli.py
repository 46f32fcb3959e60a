"""The offline CLI and ``whales models``: no services, bundles on disk only."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from tests.inference.conftest import positive_photos
from tests.paths import REPO_ROOT, sample_dir


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def cli_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "bundle"
    code, out, _ = invoke(
        "models", "make-test-bundle", str(root), "--tiny", "--gate-threshold", "0"
    )
    assert code == 0, out
    assert "untrained" in out
    return root


def test_make_test_bundle_refuses_a_non_empty_directory(cli_bundle: Path) -> None:
    result = CliRunner().invoke(cli, ["models", "make-test-bundle", str(cli_bundle), "--tiny"])
    assert result.exit_code != 0
    assert "not empty" in result.output


def test_models_info_prints_the_model_version(cli_bundle: Path) -> None:
    code, out, _ = invoke("models", "info", str(cli_bundle))
    assert code == 0
    assert "model_version: tiny-arcface-untrained-random" in out
    assert "NO (random weights" in out
    assert "10 positive / 14 negative prompts" in out
    code, out, _ = invoke("models", "info", str(cli_bundle), "--json")
    assert json.loads(out)["trained"] is False


def test_models_verify_detects_a_modified_file(cli_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(cli_bundle, copy)
    code, out, _ = invoke("models", "verify", str(copy))
    assert code == 0 and out.startswith("OK")
    with (copy / "identifier" / "species_map.csv").open("a") as handle:
        handle.write("ffffffffffff,blue_whale\n")
    result = CliRunner().invoke(cli, ["models", "verify", str(copy)])
    assert result.exit_code == 1
    assert "identifier/species_map.csv" in result.stderr
    assert "FAILED" in result.stderr


def test_models_verify_without_a_bundle_explains_what_to_do(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["models", "verify", str(tmp_path / "nothing")])
    assert result.exit_code == 1
    assert "make-test-bundle" in result.stderr


def test_batch_writes_one_row_per_file_and_survives_bad_files(
    cli_bundle: Path, tmp_path: Path
) -> None:
    data = tmp_path / "sample"
    shutil.copytree(sample_dir(), data)
    (data / "notes.txt").write_text("not a picture\n")
    whole = (data / "positives").glob("*.jpg").__next__().read_bytes()
    (data / "positives" / "zz_truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (data / "empty.jpg").write_bytes(b"")
    files = sorted(p for p in data.rglob("*") if p.is_file())
    out_csv = tmp_path / "out.csv"

    code, _, err = invoke("batch", str(data), "--csv", str(out_csv), "--model-dir", str(cli_bundle))
    assert code == 0, err
    with out_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(files)
    assert [r["file"] for r in rows] == [p.relative_to(data).as_posix() for p in files]
    by_file = {r["file"]: r for r in rows}
    assert by_file["notes.txt"]["image_error"] == "not_an_image"
    assert by_file["empty.jpg"]["image_error"] == "not_an_image"
    assert by_file["manifest.csv"]["image_error"] == "not_an_image"
    assert by_file["positives/zz_truncated.jpg"]["image_error"] == "corrupted_image"
    assert by_file["positives/zz_truncated.jpg"]["rejection_reason"] == "corrupted_image"
    images = [r for r in rows if r["file"].endswith(".jpg") and r["image_error"] == ""]
    assert len(images) == len([p for p in files if p.suffix == ".jpg"]) - 2
    assert all(r["status"] == "identified" and len(r["individual_id"]) == 12 for r in images)
    assert all(len(r["top5"].split(";")) == 5 for r in images)
    assert f"{len(files)} files" in err
    not_images = [p for p in files if p.suffix != ".jpg"] + [data / "empty.jpg"]
    assert f"not an image: {len(not_images)}" in err
    assert f"identified: {len(images)}" in err
    assert "broken image: 1" in err


def test_predict_json_and_verify(cli_bundle: Path) -> None:
    photo = positive_photos(1)[0]
    code, out, _ = invoke("predict", str(photo), "--json", "--model-dir", str(cli_bundle))
    assert code == 0
    detection = json.loads(out)
    assert detection["image_ind"] == photo.name
    assert detection["mask"] and detection["model_version"] == "tiny-arcface-untrained-random"
    code, out, _ = invoke("predict", str(photo), "--no-mask", "--model-dir", str(cli_bundle))
    assert code == 0 and "individual:" in out and "mask:" not in out
    code, out, _ = invoke("verify", str(photo), "--json", "--model-dir", str(cli_bundle))
    decision = json.loads(out)
    assert decision["is_cetacean"] is True and decision["threshold"] == 0.0


def test_predict_reads_the_bundle_from_whales_model_dir(cli_bundle: Path, tmp_path: Path) -> None:
    text = tmp_path / "letter.jpg"
    text.write_text("Dear whale,")
    env = {**os.environ, "WHALES_MODEL_DIR": str(cli_bundle), "WHALES_TORCH_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "cli.main", "predict", str(text), "--no-mask"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 1
    assert "corrupted_image" in completed.stdout
    assert "not_an_image" in completed.stdout
    assert "not a JPEG, PNG, WebP, BMP or TIFF image" in completed.stderr


@pytest.mark.parametrize("offline", ["hf_hub_offline", "closed_endpoint"])
def test_pull_fails_fast_offline_with_a_clear_message(offline: str, tmp_path: Path) -> None:
    port = closed_port()
    env = {**os.environ}
    env.pop("HF_HUB_OFFLINE", None)
    if offline == "hf_hub_offline":
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env["HF_ENDPOINT"] = f"http://127.0.0.1:{port}"
    target = tmp_path / "models"
    started = time.monotonic()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "models",
            "pull",
            str(target),
            "--u2net-url",
            f"http://127.0.0.1:{port}/u2net.onnx",
            "--timeout",
            "3",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert completed.returncode == 1
    assert elapsed < 20
    message = completed.stderr
    assert "cannot download the models" in message
    assert "0x0000dead/ecomarineai-cetacean-effb4" in message
    assert "masker (u2net.onnx" in message
    assert f"whales models make-test-bundle {target}" in message
    if offline == "hf_hub_offline":
        assert "HF_HUB_OFFLINE" in message
    else:
        assert f"127.0.0.1:{port} is unreachable" in message
    assert not target.exists() or not any(target.iterdir())

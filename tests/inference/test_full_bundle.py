"""The full-size formats: Happywhale checkpoint, OpenCLIP ViT-B-32 weights, U2Net ONNX.

Built once per session (``full_bundle``) and loaded once here; one pipeline
run on full-resolution photos goes through every model.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from shared.inference.bundle import load_bundle
from shared.inference.pipeline import Pipeline
from tests.inference.conftest import raw, settings
from tests.paths import originals

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full_pipeline(full_bundle: Path) -> Iterator[Pipeline]:
    with Pipeline.from_bundle(full_bundle, settings()) as pipeline:
        yield pipeline


def test_manifest_marks_the_bundle_untrained(full_bundle: Path) -> None:
    manifest = load_bundle(full_bundle).manifest
    assert manifest.trained is False
    assert "untrained" in manifest.model_version
    assert manifest.gate.architecture == "ViT-B-32"
    assert len(manifest.gate.positive_prompts) == 10
    assert len(manifest.gate.negative_prompts) == 14
    assert manifest.identifier.backbone == "efficientnet_b4"


def test_identifier_checkpoint_has_the_public_layout(full_bundle: Path) -> None:
    bundle = load_bundle(full_bundle)
    checkpoint = torch.load(
        bundle.path(bundle.manifest.identifier.checkpoint), map_location="cpu", weights_only=True
    )
    state = checkpoint["state_dict"]
    assert state["arc.weight"].shape == (15587, 512)
    assert state["embedding.weight"].shape == (512, 1792)
    assert state["embedding.bias"].shape == (512,)
    assert "model.conv_stem.weight" in state
    assert {key.split(".")[0] for key in state} == {"model", "embedding", "arc"}


def test_gate_weights_are_an_open_clip_vit_b_32_state_dict(full_bundle: Path) -> None:
    bundle = load_bundle(full_bundle)
    state = torch.load(
        bundle.path(bundle.manifest.gate.weights), map_location="cpu", weights_only=True
    )
    assert state["visual.conv1.weight"].shape == (768, 3, 32, 32)
    assert state["visual.proj"].shape == (768, 512)
    assert state["token_embedding.weight"].shape == (49408, 512)
    assert "logit_scale" in state


def test_masker_is_a_u2net_shaped_onnx(full_bundle: Path) -> None:
    import onnxruntime as ort

    bundle = load_bundle(full_bundle)
    session = ort.InferenceSession(
        str(bundle.path(bundle.manifest.masker.model)), providers=["CPUExecutionProvider"]
    )
    (model_input,) = session.get_inputs()
    assert model_input.name == "input.1"
    assert model_input.shape == [1, 3, 320, 320]
    assert len(session.get_outputs()) == 7
    assert bundle.path(bundle.manifest.masker.model).stat().st_size > 100_000_000


def test_full_pipeline_run_on_full_resolution_photos(full_pipeline: Pipeline) -> None:
    photos = sorted(originals(), key=lambda p: p.path.stat().st_size)[-2:]
    results = full_pipeline.run([raw(p.path) for p in photos], with_mask=True)
    assert len(full_pipeline.identifier.classes) == 13837
    for photo, result in zip(photos, results, strict=True):
        detection = result.detection
        assert detection.image_ind == photo.path.name
        assert not detection.rejected
        assert detection.model_version == full_pipeline.model_version
        with Image.open(photo.path) as original:
            assert (result.width, result.height) == original.size
        probabilities = [c.probability for c in detection.candidates]
        assert len(probabilities) == 5 and probabilities == sorted(probabilities, reverse=True)
        assert detection.mask is not None
        cutout = Image.open(io.BytesIO(base64.b64decode(detection.mask)))
        assert cutout.mode == "RGBA" and max(cutout.size) == settings().mask_max_side

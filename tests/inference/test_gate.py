"""The gate reads its prompts, scale and threshold from the bundle's manifest."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from shared.imaging import decode_image
from shared.inference.bundle import load_bundle
from shared.inference.gate import build_clip, load_clip_weights, tokenizer_for
from shared.inference.pipeline import Pipeline
from shared.inference.preprocess import resize_center_crop, to_batch
from tests.inference.conftest import copy_bundle, positive_photos, raw, settings
from tests.paths import manifest


def photos() -> list[Path]:
    negatives = [row.path for row in manifest() if row.label == "non_cetacean"]
    return positive_photos(3) + negatives[:3]


def test_threshold_above_one_rejects_everything(tiny_bundle: Path, tmp_path: Path) -> None:
    root = copy_bundle(tiny_bundle, tmp_path / "strict", gate={"threshold": 1.01})
    with Pipeline.from_bundle(root, settings(), load_masker=False) as pipeline:
        results = pipeline.run([raw(p) for p in photos()], with_mask=True)
    for result in results:
        detection = result.detection
        assert detection.rejected and detection.rejection_reason == "not_a_marine_mammal"
        assert detection.is_cetacean is False
        assert detection.candidates == [] and detection.mask is None
        assert 0.0 < detection.cetacean_score <= 1.0


def test_threshold_zero_accepts_everything(tiny_pipeline: Pipeline) -> None:
    assert tiny_pipeline.gate.threshold == 0.0
    results = tiny_pipeline.run([raw(p) for p in photos()], with_mask=False)
    assert all(r.detection.is_cetacean for r in results)
    assert all(r.detection.rejection_reason is None for r in results)


def test_score_is_the_summed_softmax_over_the_positive_prompts(tiny_bundle: Path) -> None:
    """Recompute the score from the bundle's weights and prompts with OpenCLIP directly."""
    bundle = load_bundle(tiny_bundle)
    spec = bundle.manifest.gate
    model = build_clip(spec)
    load_clip_weights(model, str(bundle.path(spec.weights)))
    model.eval()
    prompts = spec.positive_prompts + spec.negative_prompts
    # Decoded as the pipeline does: JPEG draft scale chosen for the larger input.
    min_side = max(spec.image_size, bundle.manifest.identifier.input_size)
    images = [
        decode_image(p.read_bytes(), min_side=min_side, max_pixels=10**8).image for p in photos()
    ]
    batch = to_batch(
        [resize_center_crop(i, spec.image_size) for i in images],
        spec.mean,
        spec.std,
        device=torch.device("cpu"),
    )
    with torch.inference_mode():
        text = F.normalize(model.encode_text(tokenizer_for(spec)(prompts)), dim=-1)
        image = F.normalize(model.encode_image(batch), dim=-1)
        expected = (
            (spec.logit_scale * image @ text.T).softmax(-1)[:, : len(spec.positive_prompts)].sum(-1)
        )
    with Pipeline.from_bundle(tiny_bundle, settings(), load_masker=False) as pipeline:
        screened = pipeline.screen([raw(p) for p in photos()])
    actual = torch.tensor([s.cetacean_score for s in screened])
    assert torch.allclose(actual, expected, atol=2e-4), (actual, expected)


def test_prompts_come_from_the_manifest(tiny_bundle: Path, tmp_path: Path) -> None:
    swapped = load_bundle(tiny_bundle).manifest.gate
    root = copy_bundle(
        tiny_bundle,
        tmp_path / "swapped",
        gate={
            "positive_prompts": swapped.negative_prompts,
            "negative_prompts": swapped.positive_prompts,
        },
    )
    inputs = [raw(p) for p in photos()]
    with Pipeline.from_bundle(tiny_bundle, settings(), load_masker=False) as pipeline:
        original = [s.cetacean_score for s in pipeline.screen(inputs)]
    with Pipeline.from_bundle(root, settings(), load_masker=False) as pipeline:
        assert pipeline.gate.positives == len(swapped.negative_prompts)
        flipped = [s.cetacean_score for s in pipeline.screen(inputs)]
    # Swapping the sets turns the positive share p into 1 - p.
    for before, after in zip(original, flipped, strict=True):
        assert after == pytest.approx(1.0 - before, abs=2e-4)

"""Pipeline.run: order, bad images, low confidence, masks, stage hooks."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image

from shared.inference.pipeline import Pipeline, RawImage
from shared.schemas import Detection
from tests.inference.conftest import copy_bundle, positive_photos, raw, settings


def truncated_jpeg() -> bytes:
    data = positive_photos(1)[0].read_bytes()
    return data[: len(data) // 3]


def test_results_keep_input_order_and_bad_images_are_corrupted(tiny_pipeline: Pipeline) -> None:
    good = [raw(p) for p in positive_photos(3)]
    inputs = [
        good[0],
        RawImage("notes.txt", b"this is not an image\n"),
        good[1],
        RawImage("cut.jpg", truncated_jpeg()),
        RawImage("empty.png", b""),
        good[2],
    ]
    results = tiny_pipeline.run(inputs, with_mask=False)
    assert [r.detection.image_ind for r in results] == [i.name for i in inputs]
    expected_errors = [None, "not_an_image", None, "corrupted_image", "not_an_image", None]
    assert [r.image_error for r in results] == expected_errors
    for result, item in zip(results, inputs, strict=True):
        detection = result.detection
        Detection.model_validate(detection.model_dump())  # the shared schema holds
        assert detection.model_version == tiny_pipeline.model_version
        assert result.byte_size == len(item.data)
        if result.image_error is None:
            assert not detection.rejected
            assert detection.bbox == [0, 0, result.width, result.height]
            assert result.timings_ms["identify"] > 0
        else:
            assert detection.rejected and detection.rejection_reason == "corrupted_image"
            assert detection.bbox == [0, 0, 0, 0] and detection.candidates == []
            assert result.image_error_message
            assert result.timings_ms["gate"] == 0.0


def test_masks_are_base64_pngs_with_alpha(tiny_pipeline: Pipeline) -> None:
    photos = positive_photos(2)
    results = tiny_pipeline.run([raw(p) for p in photos], with_mask=True)
    for photo, result in zip(photos, results, strict=True):
        mask = result.detection.mask
        assert mask is not None
        png = base64.b64decode(mask, validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        cutout = Image.open(io.BytesIO(png))
        assert cutout.mode == "RGBA"
        with Image.open(photo) as original:
            aspect = original.width / original.height
        assert max(cutout.size) <= settings().mask_max_side
        assert abs(cutout.width / cutout.height - aspect) < 0.02
        assert result.timings_ms["mask"] > 0


def test_without_mask_no_mask_is_computed(tiny_pipeline: Pipeline) -> None:
    result = tiny_pipeline.run([raw(positive_photos(1)[0])], with_mask=False)[0]
    assert result.detection.mask is None
    assert result.timings_ms["mask"] == 0.0


def test_low_confidence_is_rejected_with_candidates(tiny_bundle: Path, tmp_path: Path) -> None:
    root = copy_bundle(tiny_bundle, tmp_path / "picky", identifier={"min_confidence": 1.0})
    with Pipeline.from_bundle(root, settings(), load_masker=False) as pipeline:
        results = pipeline.run([raw(p) for p in positive_photos(2)], with_mask=True)
    for result in results:
        detection = result.detection
        assert detection.rejected and detection.rejection_reason == "low_confidence"
        assert detection.is_cetacean and len(detection.candidates) == 5
        assert detection.class_animal == "" and detection.mask is None


def test_between_steps_runs_before_every_forward_pass_and_mask(tiny_pipeline: Pipeline) -> None:
    size = tiny_pipeline.plan.batch_size
    photos = [raw(p) for p in positive_photos(1)] * (size + 1)  # two passes per model
    calls: list[int] = []

    tiny_pipeline.run(photos, with_mask=True, between_steps=lambda: calls.append(1))

    assert len(calls) == 2 + 2 + len(photos)  # gate passes, identifier passes, masks
    calls.clear()
    tiny_pipeline.run(photos[:1], with_mask=False, between_steps=lambda: calls.append(1))
    assert len(calls) == 2


def test_an_empty_batch_gives_no_results(tiny_pipeline: Pipeline) -> None:
    assert tiny_pipeline.run([], with_mask=True) == []


def test_identical_images_get_identical_answers(tiny_pipeline: Pipeline) -> None:
    photo = raw(positive_photos(1)[0])
    first, second = tiny_pipeline.run([photo, RawImage("copy.jpg", photo.data)], with_mask=False)
    assert first.sha256 == second.sha256
    assert first.detection.class_animal == second.detection.class_animal
    assert abs(first.detection.probability - second.detection.probability) < 1e-3

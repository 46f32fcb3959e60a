"""Identification is wired correctly, checked with random weights.

The ArcFace centres of a fresh tiny bundle are replaced by the embeddings of
sample photos (``enroll_individuals``); each photo must then come back as its
own individual, with its species, at the top of a descending top-5.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shared.imaging import decode_image
from shared.inference.bundle import load_bundle
from shared.inference.device import plan_device
from shared.inference.identifier import Identifier
from shared.inference.pipeline import Pipeline
from shared.inference.testbundle import enroll_individuals, make_test_bundle
from tests.inference.conftest import positive_photos, raw, settings

SPECIES_CYCLE = ("humpback_whale", "beluga", "bottlenose_dolphin", "killer_whale", "fin_whale")


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], list[str]]:
    root = tmp_path_factory.mktemp("enrolled") / "bundle"
    make_test_bundle(root, tiny=True, gate_threshold=0.0, min_confidence=0.0, seed=7)
    photos = positive_photos(8)
    with Pipeline.from_bundle(root, settings(), load_masker=False) as pipeline:
        images = [
            decode_image(p.read_bytes(), min_side=pipeline.min_side, max_pixels=10**8).image
            for p in photos
        ]
        embeddings = pipeline.identifier.embed(images)
    ids = [f"{0xA0B1C2D3E400 + index:012x}" for index in range(len(photos))]
    species = [SPECIES_CYCLE[index % len(SPECIES_CYCLE)] for index in range(len(photos))]
    enroll_individuals(root, embeddings, ids, species)
    return root, photos, ids


def test_each_enrolled_photo_is_its_own_individual(
    enrolled: tuple[Path, list[Path], list[str]],
) -> None:
    root, photos, ids = enrolled
    with Pipeline.from_bundle(root, settings(), load_masker=False) as pipeline:
        assert len(pipeline.identifier.classes) == len(ids)
        results = pipeline.run([raw(p) for p in photos], with_mask=False)
    for index, (photo, result) in enumerate(zip(photos, results, strict=True)):
        detection = result.detection
        assert detection.image_ind == photo.name
        assert not detection.rejected, detection
        assert detection.class_animal == ids[index]
        assert detection.id_animal == SPECIES_CYCLE[index % len(SPECIES_CYCLE)]
        assert len(detection.candidates) == 5
        assert detection.candidates[0].class_animal == ids[index]
        probabilities = [c.probability for c in detection.candidates]
        assert probabilities == sorted(probabilities, reverse=True)
        assert len({c.class_animal for c in detection.candidates}) == 5
        assert 0.0 < sum(probabilities) <= 1.0001
        assert detection.probability == probabilities[0]


def test_identity_survives_a_different_batch_composition(
    enrolled: tuple[Path, list[Path], list[str]],
) -> None:
    root, photos, ids = enrolled
    with Pipeline.from_bundle(root, settings(), load_masker=False) as pipeline:
        alone = pipeline.run([raw(photos[3])], with_mask=False)[0]
        reversed_results = pipeline.run([raw(p) for p in reversed(photos)], with_mask=False)
    assert alone.detection.class_animal == ids[3]
    assert [r.detection.class_animal for r in reversed_results] == list(reversed(ids))


def test_onnx_and_torch_engines_give_the_same_embeddings(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    plan = plan_device(settings())
    onnx = Identifier.load(bundle, plan, engine="onnx")
    eager = Identifier.load(bundle, plan, engine="torch")
    assert (onnx.net.engine, eager.net.engine) == ("onnx", "torch")
    images = [
        decode_image(p.read_bytes(), min_side=128, max_pixels=10**8).image
        for p in positive_photos(3)
    ]
    cosine = (onnx.embed(images) * eager.embed(images)).sum(dim=-1)
    assert torch.all(cosine > 0.9999), cosine


def test_species_names_come_from_the_map(tiny_pipeline: Pipeline) -> None:
    species_in_map = set(tiny_pipeline.identifier.species.values())
    result = tiny_pipeline.run([raw(positive_photos(1)[0])], with_mask=False)[0]
    for candidate in result.detection.candidates:
        assert len(candidate.class_animal) == 12
        int(candidate.class_animal, 16)  # twelve hex digits
        assert candidate.id_animal in species_in_map

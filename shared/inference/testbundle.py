"""Bundles of random weights in exactly the public formats, for tests and demos.

``make_test_bundle`` writes what ``whales models pull`` would, file for file,
with untrained weights: an OpenCLIP ViT-B-32 state dict, a Lightning-style
checkpoint with ``model.*`` / ``embedding.*`` / ``arc.weight`` around a timm
EfficientNet-B4 and a 15,587-row ArcFace head, ``encoder_classes.npy``, a
species map and a U2Net ``u2net.onnx`` with rembg's interface. The manifest
says ``trained: false`` and the model version ends in ``untrained-random``.

``tiny=True`` keeps every format but shrinks the networks (timm's
``test_efficientnet``, a two-layer OpenCLIP config carried in the manifest,
the small U²-Net) so tests load in a second.

``enroll_individuals`` turns embeddings of chosen photos into the first
ArcFace centres, which makes identification checkable with random weights:
each enrolled photo must come back as itself.
"""

from __future__ import annotations

import csv
import random
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shared.inference.bundle import (
    SEED_GATE_THRESHOLD,
    SEED_MIN_CONFIDENCE,
    SEED_NEGATIVE_PROMPTS,
    SEED_POSITIVE_PROMPTS,
    BundleManifest,
    GateSpec,
    IdentifierSpec,
    MaskerSpec,
    read_manifest,
    with_file_hashes,
    write_manifest,
)

# Bump whenever generated bundles change, so cached test bundles are rebuilt.
GENERATOR_VERSION = "1"
GENERATOR = f"whales models make-test-bundle (generator {GENERATOR_VERSION})"
FULL_MODEL_VERSION = "effb4-arcface-untrained-random"
TINY_MODEL_VERSION = "tiny-arcface-untrained-random"

# Happywhale's species, for random species maps.
SPECIES = (
    "beluga",
    "blue_whale",
    "bottlenose_dolphin",
    "brydes_whale",
    "commersons_dolphin",
    "common_dolphin",
    "cuviers_beaked_whale",
    "dusky_dolphin",
    "false_killer_whale",
    "fin_whale",
    "frasiers_dolphin",
    "gray_whale",
    "humpback_whale",
    "killer_whale",
    "long_finned_pilot_whale",
    "melon_headed_whale",
    "minke_whale",
    "pantropic_spotted_dolphin",
    "pygmy_killer_whale",
    "rough_toothed_dolphin",
    "sei_whale",
    "short_finned_pilot_whale",
    "southern_right_whale",
    "spinner_dolphin",
    "spotted_dolphin",
    "white_sided_dolphin",
)

TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

GATE_WEIGHTS_BIN = "gate/open_clip_pytorch_model.bin"
GATE_WEIGHTS_SAFETENSORS = "gate/open_clip_model.safetensors"
CHECKPOINT = "identifier/efficientnet_b4_512_fold0.ckpt"
CLASSES = "identifier/encoder_classes.npy"
SPECIES_MAP = "identifier/species_map.csv"
U2NET = "masker/u2net.onnx"


@dataclass(frozen=True)
class Shape:
    """The sizes that differ between the full and the tiny bundle."""

    backbone: str
    feature_dim: int
    input_size: int
    embedding_size: int
    num_classes: int
    active_classes: int


FULL_SHAPE = Shape("efficientnet_b4", 1792, 512, 512, 15587, 13837)
TINY_SHAPE = Shape("test_efficientnet", 256, 128, 64, 32, 24)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    # Random weights are reproducible, and the caller's RNG state is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def random_individual_ids(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)  # noqa: S311 (test data, not security)
    ids: set[str] = set()
    while len(ids) < count:
        ids.add(f"{rng.getrandbits(48):012x}")
    return sorted(ids)


def _perturb_batch_norms(model: nn.Module) -> None:
    # Fresh batch norms are identities; give them statistics so that code which
    # depends on them (batch-norm folding) is exercised for real.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d) and module.running_var is not None:
            with torch.no_grad():
                assert module.running_mean is not None
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                if module.weight is not None:
                    module.weight.uniform_(0.5, 1.5)
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.1)


def _write_gate(root: Path, spec: GateSpec) -> None:
    from shared.inference.gate import build_clip

    model = build_clip(spec)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    target = root / spec.weights
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(target))
    else:
        torch.save(state, target)


def _write_identifier(root: Path, spec: IdentifierSpec, shape: Shape, seed: int) -> None:
    from shared.inference.identifier import ArcFaceNet

    net = ArcFaceNet(spec)
    _perturb_batch_norms(net.model)
    checkpoint = {
        # The Lightning checkpoint layout of the public Happywhale model.
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": "1.6.0",
        "state_dict": net.state_dict(),
        "hyper_parameters": {
            "model_name": spec.backbone,
            "embedding_size": spec.embedding_size,
            "num_classes": spec.num_classes,
            "arc_s": spec.arcface_scale,
            "arc_m": spec.arcface_margin,
            "image_size": spec.input_size,
            "untrained_random_weights": True,
        },
    }
    (root / spec.checkpoint).parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, root / spec.checkpoint)

    ids = random_individual_ids(shape.active_classes, seed)
    rng = random.Random(seed + 1)  # noqa: S311
    species = [rng.choice(SPECIES) for _ in ids]
    _write_classes(root, spec, ids, species)


def _write_classes(
    root: Path, spec: IdentifierSpec, ids: Sequence[str], species: Sequence[str]
) -> None:
    import numpy as np

    # A fixed-width unicode array loads without pickle.
    np.save(root / spec.classes, np.asarray(list(ids), dtype="<U12"), allow_pickle=False)
    with (root / spec.species_map).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["individual_id", "species"])
        writer.writerows(zip(ids, species, strict=True))


def _write_masker(root: Path, spec: MaskerSpec, *, tiny: bool) -> None:
    from shared.inference.u2net import export_onnx, u2net_full, u2net_small

    model = u2net_small() if tiny else u2net_full()
    _perturb_batch_norms(model)
    export_onnx(model, root / spec.model)


def _make_readable(root: Path) -> None:
    # mkdtemp makes the directory private and some writers create 0600 files;
    # a bundle is read by worker processes that may run as another user.
    root.chmod(0o755)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def untrained_manifest(
    *,
    tiny: bool,
    gate_threshold: float | None = None,
    min_confidence: float | None = None,
) -> BundleManifest:
    """The manifest of a test bundle (files are hashed after they are written)."""
    shape = TINY_SHAPE if tiny else FULL_SHAPE
    gate = GateSpec(
        architecture="tiny-clip" if tiny else "ViT-B-32",
        pretrained_tag=None,
        model_cfg=TINY_CLIP_CONFIG if tiny else None,
        weights=GATE_WEIGHTS_SAFETENSORS if tiny else GATE_WEIGHTS_BIN,
        image_size=int(TINY_CLIP_CONFIG["vision_cfg"]["image_size"]) if tiny else 224,
        threshold=SEED_GATE_THRESHOLD if gate_threshold is None else gate_threshold,
        positive_prompts=list(SEED_POSITIVE_PROMPTS),
        negative_prompts=list(SEED_NEGATIVE_PROMPTS),
    )
    identifier = IdentifierSpec(
        backbone=shape.backbone,
        checkpoint=CHECKPOINT,
        classes=CLASSES,
        species_map=SPECIES_MAP,
        input_size=shape.input_size,
        feature_dim=shape.feature_dim,
        embedding_size=shape.embedding_size,
        num_classes=shape.num_classes,
        min_confidence=SEED_MIN_CONFIDENCE if min_confidence is None else min_confidence,
    )
    return BundleManifest(
        model_version=TINY_MODEL_VERSION if tiny else FULL_MODEL_VERSION,
        trained=False,
        description=(
            "UNTRAINED: random weights in the public formats, for tests and demos. "
            "Its answers mean nothing."
        ),
        generator=GENERATOR,
        sources={"all": "random initialisation"},
        gate=gate,
        identifier=identifier,
        masker=MaskerSpec(model=U2NET),
    )


def make_test_bundle(
    root: Path,
    *,
    tiny: bool = False,
    gate_threshold: float | None = None,
    min_confidence: float | None = None,
    seed: int = 0,
) -> BundleManifest:
    """Write a random-weight bundle into ``root`` (created; must be empty or absent).

    ``gate_threshold=0`` and ``min_confidence=0`` make a bundle that accepts
    every image, so tests reach identification and masking.
    """
    root = root.expanduser().resolve()
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    root.parent.mkdir(parents=True, exist_ok=True)
    manifest = untrained_manifest(
        tiny=tiny, gate_threshold=gate_threshold, min_confidence=min_confidence
    )
    shape = TINY_SHAPE if tiny else FULL_SHAPE
    # Build next to the target and rename, so a crash never leaves half a bundle.
    staging = Path(tempfile.mkdtemp(prefix=".bundle-", dir=root.parent))
    try:
        with _seeded(seed):
            _write_gate(staging, manifest.gate)
            _write_identifier(staging, manifest.identifier, shape, seed)
            _write_masker(staging, manifest.masker, tiny=tiny)
        manifest = with_file_hashes(staging, manifest)
        write_manifest(staging, manifest)
        _make_readable(staging)
        if root.exists():
            root.rmdir()
        staging.rename(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def enroll_individuals(
    root: Path,
    embeddings: torch.Tensor,
    individual_ids: Sequence[str],
    species: Sequence[str],
) -> BundleManifest:
    """Make ``embeddings`` the bundle's active ArcFace centres, one per individual.

    The first ``len(individual_ids)`` rows of ``arc.weight`` are replaced and the
    class list and species map rewritten to exactly these individuals; the
    manifest's checksums are updated. Used to test identification end to end
    with random weights.
    """
    if not len(individual_ids) == len(species) == embeddings.shape[0]:
        raise ValueError("one embedding, id and species per individual")
    manifest = read_manifest(root)
    spec = manifest.identifier
    if embeddings.shape[1] != spec.embedding_size:
        raise ValueError(f"embeddings must have {spec.embedding_size} dimensions")
    checkpoint_path = root / spec.checkpoint
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    arc = checkpoint["state_dict"]["arc.weight"]
    arc[: len(individual_ids)] = embeddings.detach().to(arc.dtype).cpu()
    torch.save(checkpoint, checkpoint_path)
    _write_classes(root, spec, individual_ids, species)
    manifest = with_file_hashes(root, manifest)
    write_manifest(root, manifest)
    return manifest

"""Individual identification: EfficientNet-B4 ArcFace embeddings against class centres.

The network is the Happywhale competition model the seed serves: a timm
backbone with global average pooling, ``Linear(1792, 512)`` to an embedding,
and an ArcFace head whose rows are the class centres. The checkpoint is
loaded unchanged: the module's attribute names are those of the checkpoint's
keys (``model.*``, ``embedding.*``, ``arc.weight``), so ``load_state_dict`` is
strict. Rows beyond ``encoder_classes.npy`` are inactive (the head was sized
for 15,587 individuals; the class list names the ones the model was trained
on) and are never ranked.

Probabilities: softmax over the active classes of ``s * cosine`` with the
ArcFace scale ``s`` of the manifest (30, as trained; the seed did the same).
Softmax is monotonic in the cosine, so the top-k by probability is the top-k
by cosine and comes out in descending order.
"""

from __future__ import annotations

import csv
import logging
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image
from torch import nn

from shared.inference.bundle import Bundle, BundleInvalid, IdentifierSpec
from shared.inference.device import DevicePlan
from shared.inference.engine import OnnxRunner, TorchRunner, choose_engine, make_runner
from shared.inference.fusion import FoldingError, fold_batch_norms
from shared.inference.preprocess import chunks, resize_square, to_batch
from shared.inference.torch_compat import ensure_torchvision_importable

log = logging.getLogger(__name__)

CHECKPOINT_PREFIXES = ("model.", "embedding.", "arc.")

# Misspellings in the Happywhale training labels, corrected the way the
# competition's organisers announced, so responses carry one name per species.
SPECIES_ALIASES = {
    "bottlenose_dolpin": "bottlenose_dolphin",
    "kiler_whale": "killer_whale",
    "globis": "short_finned_pilot_whale",
    "pilot_whale": "short_finned_pilot_whale",
}


@dataclass(frozen=True)
class Match:
    individual_id: str
    species: str
    probability: float


class ArcFaceCentres(nn.Module):
    """The ArcFace head's weight: one (unnormalised) centre per class."""

    def __init__(self, num_classes: int, embedding_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.xavier_uniform_(self.weight)


class ArcFaceNet(nn.Module):
    """Backbone -> pooled features -> embedding; attribute names match the checkpoint."""

    def __init__(self, spec: IdentifierSpec) -> None:
        super().__init__()
        ensure_torchvision_importable()
        import timm

        # num_classes=0 keeps timm's global average pooling and drops the classifier.
        self.model = timm.create_model(spec.backbone, pretrained=False, num_classes=0)
        features = int(getattr(self.model, "num_features", spec.feature_dim))
        if features != spec.feature_dim:
            raise BundleInvalid(
                f"{spec.backbone} yields {features} features, manifest says {spec.feature_dim}"
            )
        self.embedding = nn.Linear(spec.feature_dim, spec.embedding_size)
        self.arc = ArcFaceCentres(spec.num_classes, spec.embedding_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.model(images))


def read_checkpoint_state(path: Path, *, trusted: bool) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a Lightning checkpoint (or a bare state dict).

    Loaded with ``weights_only=True``; only a file whose sha256 was verified
    against the manifest (``trusted``) may fall back to full unpickling, which
    some Lightning checkpoints need for their non-tensor metadata.
    """
    try:
        payload: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not trusted:
            raise
        log.warning("%s needs full unpickling; allowed because its sha256 was verified", path)
        payload = torch.load(path, map_location="cpu", weights_only=False)
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise BundleInvalid(f"{path} holds no state_dict")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def select_model_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoint entries our network owns (training-only extras are dropped)."""
    kept = {k: v for k, v in state.items() if k.startswith(CHECKPOINT_PREFIXES)}
    kept = {k: v for k, v in kept.items() if not k.startswith("model.classifier.")}
    dropped = sorted(set(state) - set(kept))
    if dropped:
        log.info("ignoring %d checkpoint entries outside the model: %s", len(dropped), dropped[:5])
    return kept


def read_classes(path: Path, *, trusted: bool) -> list[str]:
    import numpy as np

    try:
        classes = np.load(path, allow_pickle=False)
    except ValueError:
        # sklearn's LabelEncoder saves an object array, which needs pickle.
        if not trusted:
            raise
        classes = np.load(path, allow_pickle=True)
    return [str(c) for c in classes.reshape(-1).tolist()]


def read_species_map(path: Path) -> dict[str, str]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"individual_id", "species"} <= set(reader.fieldnames):
            raise BundleInvalid(f"{path} needs the columns individual_id and species")
        return {row["individual_id"].strip(): canonical_species(row["species"]) for row in reader}


def canonical_species(name: str) -> str:
    cleaned = name.strip().lower().replace(" ", "_").replace("-", "_")
    return SPECIES_ALIASES.get(cleaned, cleaned)


class Identifier:
    """Embeds images and ranks the active ArcFace classes by cosine."""

    def __init__(
        self,
        spec: IdentifierSpec,
        net: TorchRunner | OnnxRunner,
        centres: torch.Tensor,
        classes: list[str],
        species: dict[str, str],
        plan: DevicePlan,
    ) -> None:
        self.spec = spec
        self.net = net
        self.classes = classes
        self.species = species
        self.plan = plan
        self.centres = F.normalize(centres[: len(classes)].float(), dim=-1)  # [active, dim]

    @classmethod
    def load(cls, bundle: Bundle, plan: DevicePlan, *, engine: str = "auto") -> Identifier:
        spec = bundle.manifest.identifier
        trusted = bundle.verified
        state = select_model_state(
            read_checkpoint_state(bundle.path(spec.checkpoint), trusted=trusted)
        )
        classes = read_classes(bundle.path(spec.classes), trusted=trusted)
        species = read_species_map(bundle.path(spec.species_map))
        arc = state.get("arc.weight")
        if arc is None or tuple(arc.shape) != (spec.num_classes, spec.embedding_size):
            shape = None if arc is None else tuple(arc.shape)
            raise BundleInvalid(
                f"arc.weight is {shape}, manifest says ({spec.num_classes}, {spec.embedding_size})"
            )
        if not 0 < len(classes) <= spec.num_classes:
            raise BundleInvalid(f"{len(classes)} classes for {spec.num_classes} ArcFace rows")
        missing = sum(1 for c in classes if c not in species)
        if missing:
            log.warning("%d of %d individuals have no species in the map", missing, len(classes))

        chosen = choose_engine(engine, plan)
        # onnxruntime folds batch norms itself; PyTorch eager needs it done here.
        net = cls._build(spec, state, plan, fold=chosen == "torch")
        centres = net.arc.weight.detach().to(plan.torch_device())
        size = spec.input_size
        example = torch.zeros(1, 3, size, size, device=plan.torch_device())
        runner = make_runner(net, example, plan, engine=engine, threads=plan.threads)
        log.info(
            "identifier loaded: %s, %d active classes, %s engine",
            spec.backbone,
            len(classes),
            runner.engine,
        )
        return cls(spec, runner, centres, classes, species, plan)

    @staticmethod
    def _build(
        spec: IdentifierSpec, state: dict[str, torch.Tensor], plan: DevicePlan, *, fold: bool
    ) -> ArcFaceNet:
        net = ArcFaceNet(spec)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise BundleInvalid(
                f"identifier checkpoint does not fit {spec.backbone}: {exc}"
            ) from exc
        net.eval().requires_grad_(False)
        if fold:
            example = torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
            try:
                folded = fold_batch_norms(net.model, example)
                log.debug("folded %d batch norms into convolutions", folded)
            except FoldingError as exc:
                log.warning("batch-norm folding skipped: %s", exc)
                return Identifier._build(spec, state, plan, fold=False)
        # Module.to accepts memory_format at run time; its type stubs do not say so.
        return net.to(plan.torch_device(), memory_format=torch.channels_last)  # type: ignore[call-overload]

    def preprocess(self, image: Image.Image) -> Image.Image:
        return resize_square(image, self.spec.input_size)

    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """L2-normalised embeddings [N, embedding_size], fp32, on the model's device."""
        device = self.plan.torch_device()
        prepared = [self.preprocess(image) for image in images]
        outputs: list[torch.Tensor] = []
        with torch.inference_mode():
            for part in chunks(len(prepared), self.plan.batch_size):
                batch = to_batch(
                    [prepared[i] for i in part], self.spec.mean, self.spec.std, device=device
                )
                outputs.append(F.normalize(self.net(batch).to(device).float(), dim=-1))
        if not outputs:
            return torch.empty(0, self.spec.embedding_size)
        return torch.cat(outputs)

    def rank(self, embeddings: torch.Tensor, k: int | None = None) -> list[list[Match]]:
        """Top-k active classes per embedding, in descending probability."""
        if embeddings.shape[0] == 0:
            return []
        k = min(k or self.spec.top_k, len(self.classes))
        centres = self.centres.to(embeddings.device)
        with torch.inference_mode():
            logits = self.spec.arcface_scale * (embeddings.float() @ centres.T)
            top = logits.softmax(dim=-1).topk(k, dim=-1)
        results: list[list[Match]] = []
        for probabilities, indices in zip(
            top.values.cpu().tolist(), top.indices.cpu().tolist(), strict=True
        ):
            results.append(
                [
                    Match(
                        individual_id=self.classes[index],
                        species=self.species.get(self.classes[index], "unknown"),
                        probability=float(probability),
                    )
                    for probability, index in zip(probabilities, indices, strict=True)
                ]
            )
        return results

    def identify(self, images: Sequence[Image.Image]) -> list[list[Match]]:
        return self.rank(self.embed(images))

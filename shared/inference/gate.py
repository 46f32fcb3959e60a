"""Anti-fraud gate: OpenCLIP zero-shot "is this a marine mammal".

score = sum over the positive prompts of softmax(logit_scale * cos(image, prompt))
taken over all prompts, positive and negative. The prompts, the scale and the
threshold come from the bundle's manifest; the prompt embeddings are computed
once at load and the text tower is then dropped (only the image tower runs
per image, and the text tower is 40% of ViT-B-32's memory). The image tower
runs in the engine :mod:`shared.inference.engine` picks (onnxruntime on CPU).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image

from shared.inference.bundle import Bundle, BundleInvalid, GateSpec
from shared.inference.device import DevicePlan
from shared.inference.engine import OnnxRunner, TorchRunner, make_runner
from shared.inference.preprocess import chunks, resize_center_crop, to_batch
from shared.inference.torch_compat import ensure_torchvision_importable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateDecision:
    score: float
    is_cetacean: bool


def build_clip(spec: GateSpec) -> Any:
    """An OpenCLIP CLIP model of the bundle's architecture, with random weights."""
    ensure_torchvision_importable()
    import open_clip

    config = spec.model_cfg or open_clip.get_model_config(spec.architecture)
    if config is None:
        raise BundleInvalid(f"OpenCLIP has no model config named {spec.architecture!r}")
    config = dict(config)
    if config.pop("custom_text", False) or "hf_model_name" in config.get("text_cfg", {}):
        raise BundleInvalid("only OpenCLIP models with the built-in text tower are supported")
    return open_clip.CLIP(**config)


def tokenizer_for(spec: GateSpec) -> Any:
    ensure_torchvision_importable()
    import open_clip

    if spec.model_cfg is None:
        return open_clip.get_tokenizer(spec.architecture)
    context_length = int(spec.model_cfg.get("text_cfg", {}).get("context_length", 77))
    return open_clip.SimpleTokenizer(context_length=context_length)


def load_clip_weights(model: Any, path: str) -> None:
    """Load an OpenCLIP state dict (.safetensors, .bin or .pt) strictly."""
    ensure_torchvision_importable()
    import open_clip

    try:
        open_clip.load_checkpoint(model, path, strict=True, weights_only=True)
    except RuntimeError as exc:
        raise BundleInvalid(f"gate weights {path} do not fit the model: {exc}") from exc


class CetaceanGate:
    """The loaded image tower plus the prompt embeddings."""

    def __init__(
        self,
        spec: GateSpec,
        visual: TorchRunner | OnnxRunner,
        prompts: torch.Tensor,
        plan: DevicePlan,
    ) -> None:
        self.spec = spec
        self.visual = visual
        self.prompt_embeddings = prompts  # [prompts, dim], L2-normalised, fp32
        self.positives = len(spec.positive_prompts)
        self.plan = plan

    @classmethod
    def load(cls, bundle: Bundle, plan: DevicePlan, *, engine: str = "auto") -> CetaceanGate:
        spec = bundle.manifest.gate
        model = build_clip(spec)
        load_clip_weights(model, str(bundle.path(spec.weights)))
        model.eval()
        prompts = list(spec.positive_prompts) + list(spec.negative_prompts)
        with torch.inference_mode():
            tokens = tokenizer_for(spec)(prompts)
            text = F.normalize(model.encode_text(tokens).float(), dim=-1)
        example = torch.zeros(1, 3, spec.image_size, spec.image_size)
        visual = make_runner(
            model.visual.to(plan.torch_device()),
            example.to(plan.torch_device()),
            plan,
            engine=engine,
            threads=plan.threads,
        )
        del model  # the text tower is no longer needed
        log.info(
            "gate loaded: %s, %d prompts, %s engine", spec.architecture, len(prompts), visual.engine
        )
        return cls(spec, visual, text.to(plan.torch_device()), plan)

    @property
    def threshold(self) -> float:
        return self.spec.threshold

    def preprocess(self, image: Image.Image) -> Image.Image:
        return resize_center_crop(image, self.spec.image_size)

    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """L2-normalised image embeddings [N, dim] (fp32, on the model's device)."""
        device = self.plan.torch_device()
        outputs: list[torch.Tensor] = []
        prepared = [self.preprocess(image) for image in images]
        with torch.inference_mode():
            for part in chunks(len(prepared), self.plan.batch_size):
                batch = to_batch(
                    [prepared[i] for i in part], self.spec.mean, self.spec.std, device=device
                )
                outputs.append(F.normalize(self.visual(batch).to(device).float(), dim=-1))
        return torch.cat(outputs) if outputs else torch.empty(0, self.prompt_embeddings.shape[1])

    def scores_from_embeddings(self, embeddings: torch.Tensor) -> list[float]:
        logits = self.spec.logit_scale * embeddings @ self.prompt_embeddings.T
        probabilities = logits.softmax(dim=-1)
        return probabilities[:, : self.positives].sum(dim=-1).clamp(0.0, 1.0).tolist()

    def decide(self, images: Sequence[Image.Image]) -> list[GateDecision]:
        if not images:
            return []
        scores = self.scores_from_embeddings(self.embed(images))
        return [GateDecision(score=s, is_cetacean=s >= self.threshold) for s in scores]

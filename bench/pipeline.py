"""Inference benchmark: per-stage times, batch throughput, single-photo latency, bf16.

Usage::

    .venv/bin/python bench/pipeline.py [--originals DIR] [--model-dir DIR] [--repeat N]

Runs on the full-resolution sample photos (``../shared/data/sample/originals``
or ``--originals``) with the bundle at ``--model-dir`` / WHALES_MODEL_DIR, or,
when neither is set, with a full-size random-weight bundle written to a
temporary directory (timings do not depend on the weights' values).

Prints, in one run: the machine's core count and threads; decode time per
image with and without JPEG draft mode; gate, identifier and mask time per
image; whole-pipeline images/second at batch sizes 1, 2, 4, 8 and 16 (images
per ``Pipeline.run`` call, no masks); the p50 latency of one full-size photo
with its mask; and bf16-autocast versus fp32 embeddings (cosine and time) in
PyTorch, next to the onnxruntime engine the pipeline uses on CPU. Numbers on
a machine shared with other work are noisy; the minimum of repeats is shown
for stage times and the median for latency.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# Run as a script, Python puts bench/ first on the path, where sibling
# benchmarks' names (queue.py) would shadow the standard library: use the
# repository root instead.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

SEED_BATCH_IMG_S = 2.9
SEED_SINGLE_MASK_S = 4.45
BATCH_SIZES = (1, 2, 4, 8, 16)


def _default_originals() -> Path:
    from tests.paths import sample_dir

    return sample_dir() / "originals"


def _best_ms(function: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000.0)
    return min(times)


def _line(label: str, value: str) -> None:
    print(f"  {label:<44} {value}")


def bench_decode(datas: Sequence[bytes], repeat: int, max_pixels: int) -> None:
    from shared.imaging import decode_image

    print("decode (per image, mean over the photos, best of repeats)")
    for label, min_side in (("full decode", None), ("draft decode (min_side 512)", 512)):
        ms = [
            _best_ms(
                lambda d=d, s=min_side: decode_image(d, min_side=s, max_pixels=max_pixels), repeat
            )
            for d in datas
        ]
        largest = max(range(len(datas)), key=lambda i: len(datas[i]))
        _line(label, f"{statistics.mean(ms):7.1f} ms mean, {ms[largest]:6.1f} ms largest photo")


def bench_stages(pipeline, images, repeat: int) -> None:  # type: ignore[no-untyped-def]
    print(f"model stages (per image, batch {pipeline.plan.batch_size}, best of {repeat})")
    count = len(images)
    gate_ms = _best_ms(lambda: pipeline.gate.embed(images), repeat) / count
    ident_ms = _best_ms(lambda: pipeline.identifier.embed(images), repeat) / count
    masker = pipeline.masker()
    mask_ms = _best_ms(lambda: [masker.cutout_base64(i) for i in images], repeat) / count
    _line(f"gate ViT-B-32 @224 ({pipeline.gate.visual.engine})", f"{gate_ms:7.1f} ms")
    _line(
        f"identifier EfficientNet-B4 @512 ({pipeline.identifier.net.engine})", f"{ident_ms:7.1f} ms"
    )
    _line(f"mask U2Net @{masker.spec.input_size} + cutout PNG", f"{mask_ms:7.1f} ms")
    print("  (the seed: EffNet-B4 171 ms fp32 / 124 ms channels_last, ViT 93 ms, U2Net 304 ms)")


def bench_throughput(pipeline, raws, repeat: int) -> float:  # type: ignore[no-untyped-def]
    print("whole pipeline, no masks (decode + gate + identify), images per second")
    best = 0.0
    for size in BATCH_SIZES:
        batch = [raws[i % len(raws)] for i in range(size)]
        pipeline.run(batch, with_mask=False)  # warm the shapes of this batch size
        # At least 16 images per measurement, so small batches are not one-off samples.
        calls = max(repeat, -(-16 // size))
        started = time.perf_counter()
        for _ in range(calls):
            pipeline.run(batch, with_mask=False)
        rate = size * calls / (time.perf_counter() - started)
        best = max(best, rate)
        _line(f"batch {size:>2}", f"{rate:6.2f} img/s")
    return best


def bench_single(pipeline, raw, repeat: int) -> float:  # type: ignore[no-untyped-def]
    first = pipeline.run([raw], with_mask=True)[0]
    if first.detection.rejected:
        print(f"  note: the bundle rejects {raw.name} ({first.detection.rejection_reason})")
    times = []
    stages = []
    for _ in range(max(repeat, 5)):
        started = time.perf_counter()
        result = pipeline.run([raw], with_mask=True)[0]
        times.append(time.perf_counter() - started)
        stages.append(result.timings_ms)
    p50 = statistics.median(times)
    median_stage = {k: statistics.median(s[k] for s in stages) for k in stages[0]}
    print(f"single full-size photo with mask ({raw.name})")
    _line("p50 latency", f"{p50 * 1000:7.1f} ms")
    _line("stages (median)", ", ".join(f"{k} {v:.0f} ms" for k, v in median_stage.items()))
    return p50


def bench_bf16(bundle_dir: Path, images, repeat: int) -> None:  # type: ignore[no-untyped-def]
    import torch

    from shared.inference.bundle import load_bundle
    from shared.inference.device import cpu_has_amx, plan_device
    from shared.inference.gate import CetaceanGate
    from shared.inference.identifier import Identifier
    from shared.settings import Settings

    bundle = load_bundle(bundle_dir)
    plans = {
        name: plan_device(Settings(bf16=name, device="cpu", torch_threads=torch.get_num_threads()))
        for name in ("off", "on")
    }
    print(f"bf16 autocast vs fp32 on CPU (AMX: {'yes' if cpu_has_amx() else 'no'})")
    for label, loader in (
        ("identifier", lambda plan, engine: Identifier.load(bundle, plan, engine=engine)),
        ("gate", lambda plan, engine: CetaceanGate.load(bundle, plan, engine=engine)),
    ):
        fp32 = loader(plans["off"], "torch")
        bf16 = loader(plans["on"], "torch")
        onnx = loader(plans["off"], "onnx")
        reference = fp32.embed(images)
        cosine = (bf16.embed(images) * reference).sum(-1)
        onnx_cosine = (onnx.embed(images) * reference).sum(-1)
        timings = {
            name: _best_ms(lambda m=model: m.embed(images), repeat) / len(images)
            for name, model in (("fp32", fp32), ("bf16", bf16), ("onnx", onnx))
        }
        _line(
            f"{label}: torch fp32 / torch bf16 / onnxruntime",
            f"{timings['fp32']:6.1f} / {timings['bf16']:6.1f} / {timings['onnx']:6.1f} ms/img",
        )
        _line(
            f"{label}: cosine to fp32, bf16 (min, mean)",
            f"{float(cosine.min()):.5f}, {float(cosine.mean()):.5f}"
            f"  ({'within' if float(cosine.min()) >= 0.99 else 'OUTSIDE'} 0.99)",
        )
        _line(f"{label}: cosine to fp32, onnxruntime (min)", f"{float(onnx_cosine.min()):.6f}")
        del fp32, bf16, onnx


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--originals", type=Path, default=None)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    import torch

    from shared.imaging import decode_image
    from shared.inference.pipeline import Pipeline, RawImage
    from shared.settings import get_settings

    settings = get_settings()
    originals = args.originals or _default_originals()
    paths = sorted(originals.glob("*.jpg"))
    if not paths:
        raise SystemExit(f"no .jpg photos in {originals}")
    raws = [RawImage(p.name, p.read_bytes()) for p in paths]
    model_dir = args.model_dir or settings.model_dir
    scratch = None
    if model_dir is None:
        from shared.inference.testbundle import make_test_bundle

        scratch = tempfile.TemporaryDirectory(prefix="whales-bench-")
        model_dir = Path(scratch.name) / "bundle"
        started = time.perf_counter()
        # Gate threshold and confidence floor at 0: every photo goes through every stage.
        make_test_bundle(model_dir, tiny=False, gate_threshold=0.0, min_confidence=0.0)
        print(f"built a full-size random-weight bundle in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    pipeline = Pipeline.from_bundle(model_dir, settings)
    load_s = time.perf_counter() - started
    print(
        f"machine: {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, onnxruntime threads {pipeline.plan.threads}, "
        f"masker threads {settings.onnx_threads}, device {pipeline.device}, "
        f"bf16 {pipeline.plan.bf16}"
    )
    print(f"bundle: {pipeline.model_version} at {model_dir} (loaded in {load_s:.1f} s)")
    print(f"photos: {len(paths)} from {originals}")
    print("note: a shared machine makes these numbers noisy")

    bench_decode([r.data for r in raws], args.repeat, settings.max_image_pixels)
    images = [
        decode_image(r.data, min_side=pipeline.min_side, max_pixels=settings.max_image_pixels).image
        for r in raws
    ]
    bench_stages(pipeline, images, args.repeat)
    best_rate = bench_throughput(pipeline, raws, args.repeat)
    largest = max(raws, key=lambda r: len(r.data))
    p50 = bench_single(pipeline, largest, args.repeat)
    pipeline.close()
    del pipeline
    bench_bf16(model_dir, images, args.repeat)

    print("against the seed on this machine kind")
    _line(
        f"best batch throughput (seed {SEED_BATCH_IMG_S} img/s)",
        f"{best_rate:.2f} img/s = {best_rate / SEED_BATCH_IMG_S:.2f}x (target >= 2.5x)",
    )
    _line(
        f"single photo with mask p50 (seed {SEED_SINGLE_MASK_S} s)",
        f"{p50:.3f} s = {SEED_SINGLE_MASK_S / p50:.1f}x faster (target >= 5x)",
    )
    if scratch is not None:
        scratch.cleanup()


if __name__ == "__main__":
    main()

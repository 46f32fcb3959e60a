"""onnxruntime session options shared by every ONNX model the workers run."""

from __future__ import annotations

from typing import Any


def session_options(threads: int) -> Any:
    """Explicit thread counts, full graph optimisation, quiet logs, no spinning.

    Spinning worker threads would burn the cores that image decoding and the
    other processes on a small machine need between forward passes.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options

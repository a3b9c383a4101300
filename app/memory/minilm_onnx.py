"""The encoder layers of `app.memory.minilm` run by ONNX Runtime instead of numpy.

The same float32 weights, the same arithmetic (fused QKV projection with the attention scale folded in,
additive key mask, exact-erf GELU, post-layer-norm residuals), expressed as an ONNX graph built in memory
from the loaded model -- no model file is converted or shipped. ONNX Runtime's CPU kernels (MLAS) run a
short query's forward pass in ~0.6x the time of OpenBLAS through numpy on one thread
(`scripts/bench_embed_runtime.py`), and the vectors are the numpy model's to float32 noise, so a store
written with either runtime serves the other.

Only the encoder stack runs here: the embedding lookup, the first layer norm and the mean pooling stay in
numpy (`MiniLMModel._forward`), they are a few row copies.

The gain is ONNX Runtime's pre-packed weights (MLAS's blocked layout, made once at session start; with
``session.disable_prepacking`` a query is as slow as numpy's). The price is memory: the worker process holds
~255 MiB instead of ~155 MiB (the two libraries ~50 MiB, the session's weights and their packed copies).

``int8=True`` builds the same graph with every weight matrix quantised to int8 (symmetric, one scale per output
column) and each product computed as ONNX's dynamic quantisation does it: the activations quantised per call
(``DynamicQuantizeLinear``), an integer product (``MatMulInteger``), rescaled to float. Only *search queries*
use it (`MiniLMModel.encode(query=True)`): a short query embeds in ~0.4x the float32 time, its vector is within
cos 0.99 of the float32 one, and the stored memories keep their float32 vectors. On LoCoMo, queries embedded
in int8 against float32 memories retrieve as float32 queries do (R@5 72.0 vs 71.9; docs/benchmarks.md). The
second session costs the worker ~23 MiB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from app.memory.minilm import MiniLMModel

RUNTIMES = ("auto", "numpy", "onnx")
#: How search queries are embedded (``query_precision``): as documents are, or with int8 weights (ONNX only).
QUERY_PRECISIONS = ("float32", "int8")
OPSET = 20  # Gelu and LayerNormalization are standard ops from here on


def onnx_available() -> bool:
    """ONNX Runtime and the ``onnx`` graph helpers are installed. Looked up, not imported: importing ``onnx``
    costs ~1.5 s and ~20 MiB, which the server process (the model runs in its worker) must not pay."""
    import importlib.util

    try:
        return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))
    except (ImportError, ValueError):
        return False


def resolve_runtime(runtime: str) -> str:
    """``"auto"`` -> ``"onnx"`` when ONNX Runtime is installed, else ``"numpy"``; others unchanged."""
    if runtime not in RUNTIMES:
        raise ValueError(f"embedder runtime must be one of {RUNTIMES}, not {runtime!r}")
    if runtime == "auto":
        return "onnx" if onnx_available() else "numpy"
    return runtime


class _GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list = []
        self.initializers: list = []
        self._n = 0

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        from onnx import helper

        self._n += 1
        out = f"{op_type.lower()}_{self._n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out


    def matmul(self, x: str, name: str, weight: np.ndarray, int8: bool) -> str:
        """``x @ weight``; with ``int8`` the weight is stored as int8 with one scale per output column and the
        product is computed on activations quantised per call (uint8, per tensor)."""
        if not int8:
            return self.op("MatMul", [x, self.const(name, weight)])
        w_scale = (np.abs(weight).max(axis=0) / 127.0).astype(np.float32)
        w_scale[w_scale == 0] = 1.0
        w_q = np.clip(np.rint(weight / w_scale), -127, 127).astype(np.int8)
        x_q = self.op("DynamicQuantizeLinear", [x])  # outputs x_q, its scale and zero point
        x_scale, x_zero = f"{x_q}_scale", f"{x_q}_zero"
        self.nodes[-1].output.extend([x_scale, x_zero])
        zeros = self.const(f"{name}_zero", np.zeros(weight.shape[1], np.int8))
        product = self.op("MatMulInteger", [x_q, self.const(f"{name}_q", w_q), x_zero, zeros])
        scale = self.op("Mul", [x_scale, self.const(f"{name}_scale", w_scale)])
        return self.op("Mul", [self.op("Cast", [product], to=1), scale])  # to=FLOAT


def build_graph(model: MiniLMModel, *, int8: bool = False) -> bytes:
    """The serialized ONNX model of ``model``'s encoder layers (weight products in int8 with ``int8``).

    Inputs: ``x`` (B, T, H) float32, the embeddings after their layer norm; ``bias`` (B, 1, 1, T) float32,
    the additive attention mask (0 for real tokens, a large negative number for padding).
    Output: ``y`` (B, T, H), the last layer's hidden states.
    """
    from onnx import TensorProto, helper

    H, nh, hd, eps = model.hidden_size, model.num_heads, model.head_dim, float(model.eps)
    g = _GraphBuilder()
    heads = g.const("shape_heads", np.array([0, 0, nh, hd], np.int64))
    merged = g.const("shape_merged", np.array([0, 0, H], np.int64))
    axis = g.const("axis_last", np.array([-1], np.int64))
    x = "x"
    for i, L in enumerate(model.layers):
        qkv = g.op("Add", [g.matmul(x, f"w_qkv_{i}", L.w_qkv, int8), g.const(f"b_qkv_{i}", L.b_qkv)])
        parts = []
        for j in range(3):
            start = g.const(f"start_{i}_{j}", np.array([j * H], np.int64))
            end = g.const(f"end_{i}_{j}", np.array([(j + 1) * H], np.int64))
            parts.append(g.op("Reshape", [g.op("Slice", [qkv, start, end, axis]), heads]))  # (B, T, nh, hd)
        q = g.op("Transpose", [parts[0]], perm=[0, 2, 1, 3])  # (B, nh, T, hd)
        k = g.op("Transpose", [parts[1]], perm=[0, 2, 3, 1])  # (B, nh, hd, T)
        v = g.op("Transpose", [parts[2]], perm=[0, 2, 1, 3])
        probs = g.op("Softmax", [g.op("Add", [g.op("MatMul", [q, k]), "bias"])], axis=-1)
        ctx = g.op("Reshape", [g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3]), merged])
        attn = g.op("Add", [g.matmul(ctx, f"w_o_{i}", L.w_o, int8), g.const(f"b_o_{i}", L.b_o)])
        x = g.op("LayerNormalization", [g.op("Add", [attn, x]), g.const(f"ln1_w_{i}", L.ln1_w),
                                        g.const(f"ln1_b_{i}", L.ln1_b)], axis=-1, epsilon=eps)
        inner = g.op("Add", [g.matmul(x, f"w_i_{i}", L.w_i, int8), g.const(f"b_i_{i}", L.b_i)])
        out = g.matmul(g.op("Gelu", [inner]), f"w_out_{i}", L.w_out, int8)
        out = g.op("Add", [g.op("Add", [out, g.const(f"b_out_{i}", L.b_out)]), x])
        x = g.op("LayerNormalization", [out, g.const(f"ln2_w_{i}", L.ln2_w), g.const(f"ln2_b_{i}", L.ln2_b)],
                 axis=-1, epsilon=eps)
    g.nodes.append(helper.make_node("Identity", [x], ["y"]))
    graph = helper.make_graph(
        g.nodes, "minilm_encoder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", H]),
         helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["B", 1, 1, "T"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "T", H])],
        g.initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]).SerializeToString()


class OnnxEncoder:
    """An ONNX Runtime session over `build_graph` of a loaded model; ``run`` is thread-safe."""

    def __init__(self, model: MiniLMModel, threads: int | None = 1, *, int8: bool = False) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        # One intra-op thread by default, as for OpenBLAS (`bert_ops.set_blas_threads`): fork-join threads
        # collapse when the server's other work shares the cores. Never spin-wait between calls.
        opts.intra_op_num_threads = int(threads) if threads else 0
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only
        opts.enable_cpu_mem_arena = False  # activations freed after each call, as numpy does
        self._session = ort.InferenceSession(build_graph(model, int8=int8), opts, providers=["CPUExecutionProvider"])
        _release_free_memory()

    def run(self, x: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
        """(B, T, H) embeddings -> (B, T, H) hidden states of the last layer."""
        B, T, _ = x.shape
        if bias is None:
            bias = np.zeros((B, 1, 1, T), dtype=np.float32)
        return self._session.run(["y"], {"x": np.ascontiguousarray(x, dtype=np.float32),
                                         "bias": np.ascontiguousarray(bias, dtype=np.float32)})[0]


def _release_free_memory() -> None:
    """Hand the heap the graph was built in back to the OS (glibc keeps freed arenas otherwise: the
    serialized graph and its tensors are a transient ~90 MB copy of the weights)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        libc = None
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)

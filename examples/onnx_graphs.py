"""ONNX example graphs built with ``onnx.helper`` from seeded numpy weights (no downloads, no torch).

The weights are random but fixed (numpy ``default_rng`` with a seed), so a rebuild gives the same
model bytes and tests can compare against onnxruntime on the artefact itself.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # LayerNormalization is a standard op from 17 on
IR_VERSION = 9  # readable by every onnxruntime >= 1.17 that pyproject allows


class GraphBuilder:
    """Collects nodes and initializers and names intermediate values, so graph code reads like a model."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, array: np.ndarray) -> str:
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def weight(self, hint: str, shape: tuple[int, ...], std: float) -> str:
        return self.const(hint, (self.rng.standard_normal(shape) * std).astype(np.float32))

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        output = out or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attrs))
        return output

    def linear(self, x: str, fan_in: int, fan_out: int, hint: str) -> str:
        """x @ W + b with W ~ N(0, 1/fan_in), which keeps activations near unit scale."""
        w = self.weight(f"{hint}_w", (fan_in, fan_out), 1.0 / math.sqrt(fan_in))
        b = self.const(f"{hint}_b", np.zeros(fan_out, dtype=np.float32))
        return self.op("Add", self.op("MatMul", x, w), b)

    def model(
        self, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]
    ) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name="inferd-examples",
        )
        onnx.checker.check_model(model, full_check=True)
        return model


def mlp_ranker(features: int = 256, hidden: tuple[int, ...] = (128, 64), seed: int = 0) -> onnx.ModelProto:
    """features FP32 [batch, 256] -> Gemm+Relu x2 -> Gemm -> Sigmoid -> score FP32 [batch, 1]."""
    g = GraphBuilder(seed)
    x = "features"
    width = features
    for i, size in enumerate(hidden):
        w = g.weight(f"dense{i}_w", (width, size), math.sqrt(2.0 / width))
        b = g.const(f"dense{i}_b", np.zeros(size, dtype=np.float32))
        x = g.op("Relu", g.op("Gemm", x, w, b))
        width = size
    w = g.weight("head_w", (width, 1), 1.0 / math.sqrt(width))
    b = g.const("head_b", np.zeros(1, dtype=np.float32))
    g.op("Sigmoid", g.op("Gemm", x, w, b), out="score")
    return g.model(
        "mlp_ranker",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
    )


def _gelu(g: GraphBuilder, x: str) -> str:
    """Exact GELU from Erf (Gelu is only an op from opset 20); onnxruntime fuses the pattern."""
    half = g.const("half", np.array(0.5, dtype=np.float32))
    one = g.const("one", np.array(1.0, dtype=np.float32))
    inv_sqrt2 = g.const("inv_sqrt2", np.array(1.0 / math.sqrt(2.0), dtype=np.float32))
    erf = g.op("Erf", g.op("Mul", x, inv_sqrt2))
    return g.op("Mul", g.op("Mul", x, g.op("Add", erf, one)), half)


def _layer_norm(g: GraphBuilder, x: str, d_model: int, hint: str) -> str:
    gamma = g.const(f"{hint}_gamma", np.ones(d_model, dtype=np.float32))
    beta = g.const(f"{hint}_beta", np.zeros(d_model, dtype=np.float32))
    return g.op("LayerNormalization", x, gamma, beta, axis=-1, epsilon=1e-5)


def _attention(g: GraphBuilder, x: str, mask_bias: str, d_model: int, heads: int, hint: str) -> str:
    """Multi-head self-attention from MatMul/Softmax; padded positions get a large negative bias."""
    head_dim = d_model // heads
    split = g.const("split_heads", np.array([0, 0, heads, head_dim], dtype=np.int64))  # 0 = keep that dim
    merge = g.const("merge_heads", np.array([0, 0, d_model], dtype=np.int64))

    def project(name: str, perm: list[int]) -> str:
        return g.op("Transpose", g.op("Reshape", g.linear(x, d_model, d_model, f"{hint}_{name}"), split), perm=perm)

    q = project("q", [0, 2, 1, 3])  # [B, H, S, Dh]
    k = project("k", [0, 2, 3, 1])  # [B, H, Dh, S]
    v = project("v", [0, 2, 1, 3])  # [B, H, S, Dh]
    scale = g.const("attn_scale", np.array(1.0 / math.sqrt(head_dim), dtype=np.float32))
    scores = g.op("Add", g.op("Mul", g.op("MatMul", q, k), scale), mask_bias)
    probs = g.op("Softmax", scores, axis=-1)
    context = g.op("Reshape", g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3]), merge)
    return g.linear(context, d_model, d_model, f"{hint}_o")


def text_encoder(
    vocab: int = 1024,
    seq_len: int = 128,
    d_model: int = 256,
    heads: int = 4,
    layers: int = 4,
    ffn: int = 1024,
    classes: int = 8,
    seed: int = 0,
) -> onnx.ModelProto:
    """input_ids INT64 [batch, 128] -> pre-LN encoder -> masked mean pool -> logits FP32 [batch, 8].

    Id 0 is padding (masked in attention and pooling), matching the ``tokenizer`` example.
    """
    g = GraphBuilder(seed)
    token_table = g.weight("token_embedding", (vocab, d_model), 0.1)
    position_table = g.weight("position_embedding", (seq_len, d_model), 0.1)
    x = g.op("Add", g.op("Gather", token_table, "input_ids", axis=0), position_table)  # [B, S, D]

    pad = g.op("Equal", "input_ids", g.const("pad_id", np.array(0, dtype=np.int64)))  # [B, S]
    pad_f = g.op("Cast", pad, to=TensorProto.FLOAT)
    neg = g.const("mask_value", np.array(-1e4, dtype=np.float32))
    mask_bias = g.op("Unsqueeze", g.op("Mul", pad_f, neg), g.const("axes_1_2", np.array([1, 2], dtype=np.int64)))
    keep = g.op("Cast", g.op("Not", pad), to=TensorProto.FLOAT)  # [B, S]

    for layer in range(layers):
        hint = f"layer{layer}"
        x = g.op(
            "Add",
            x,
            _attention(g, _layer_norm(g, x, d_model, f"{hint}_ln1"), mask_bias, d_model, heads, hint),
        )
        hidden = _gelu(g, g.linear(_layer_norm(g, x, d_model, f"{hint}_ln2"), d_model, ffn, f"{hint}_ffn1"))
        x = g.op("Add", x, g.linear(hidden, ffn, d_model, f"{hint}_ffn2"))
    x = _layer_norm(g, x, d_model, "final_ln")

    axis1 = g.const("axis_1", np.array([1], dtype=np.int64))
    axis2 = g.const("axis_2", np.array([2], dtype=np.int64))
    summed = g.op("ReduceSum", g.op("Mul", x, g.op("Unsqueeze", keep, axis2)), axis1, keepdims=0)  # [B, D]
    count = g.op("Max", g.op("ReduceSum", keep, axis1, keepdims=1), g.const("one_f", np.array(1.0, np.float32)))
    pooled = g.op("Div", summed, count)
    head_w = g.weight("classifier_w", (d_model, classes), 1.0 / math.sqrt(d_model))
    head_b = g.const("classifier_b", np.zeros(classes, dtype=np.float32))
    g.op("Add", g.op("MatMul", pooled, head_w), head_b, out="logits")
    return g.model(
        "text_encoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", seq_len])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
    )

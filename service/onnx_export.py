"""A trained `engine.Model` as an ONNX graph: raw float32 features in, class labels and probabilities out.

The graph repeats `Model.predict_proba` step by step: the features are standardised in float64 with the
training statistics (`Sub`, `Div`) and cast to the weights' dtype, each layer is a `Gemm` followed by the
hidden activation, the last by softmax or sigmoid (one sigmoid unit `p` becomes the two columns `[1 - p, p]`),
and the label is the class of the largest probability (`ArgMax` keeps the first of ties, as NumPy does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import engine
from engine.activations import LEAKY_SLOPE

OPSET = 17
"""The ONNX operator set the graph is written against (ONNX Runtime 1.13 and later run it)."""

IR_VERSION = 8
"""The ONNX file format version matching `OPSET` (newer `onnx` releases would write a newer one by default)."""

PRODUCER = "backprop"

_ELEMENT_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}


class _Graph:
    """The nodes and constant tensors of the graph under construction, with fresh names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name=name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{op}_{len(self.nodes)}", **attributes))
        return output


HIDDEN_ACTIVATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "relu": ("Relu", {}),
    "leaky_relu": ("LeakyRelu", {"alpha": LEAKY_SLOPE}),
    "tanh": ("Tanh", {}),
    "sigmoid": ("Sigmoid", {}),
    "identity": ("Identity", {}),
}
"""Engine activation name -> the ONNX operator and its attributes."""


def _classes_tensor(classes: Sequence[object]) -> np.ndarray:
    if all(isinstance(label, str) for label in classes):
        return np.asarray(classes, dtype=object)
    return np.asarray(classes, dtype=np.int64)


def _probabilities(graph: _Graph, logits: str, output: str, dtype: np.dtype[np.floating]) -> str:
    """Softmax over the logits, or `[1 - p, p]` from the single sigmoid unit, in the weights' dtype."""
    if output == "softmax":
        proba = graph.node("Softmax", [logits], "proba_model", axis=-1)
    else:
        p = graph.node("Sigmoid", [logits], "p")
        one = graph.constant("one", np.ones((1, 1), dtype=dtype))
        proba = graph.node("Concat", [graph.node("Sub", [one, p], "one_minus_p"), p], "proba_model", axis=1)
    return proba


def to_onnx(model: engine.Model) -> onnx.ModelProto:
    """The ONNX graph of `model` (checked with `onnx.checker`): input `input` float32 [N, n_features];
    outputs `label` [N] (int64 or string, as the model's classes are) and `probabilities` float32 [N, k]."""
    dtype = np.dtype(model.dtype)
    if dtype not in _ELEMENT_TYPES:
        raise ValueError(f"model weights are {dtype}, ONNX export supports float32 and float64")
    if model.activation not in HIDDEN_ACTIVATIONS:
        raise ValueError(f"activation {model.activation!r} has no ONNX equivalent")
    op, attributes = HIDDEN_ACTIVATIONS[model.activation]
    graph = _Graph()
    X = graph.node("Cast", ["input"], "input_f64", to=TensorProto.DOUBLE)
    X = graph.node("Sub", [X, graph.constant("mean", model.mean.astype(np.float64))], "centred")
    X = graph.node("Div", [X, graph.constant("scale", model.scale.astype(np.float64))], "standardised")
    A = graph.node("Cast", [X], "A0", to=_ELEMENT_TYPES[dtype])
    last = len(model.params) - 1
    for index, (W, b) in enumerate(model.params):
        weights = graph.constant(f"W{index + 1}", np.asarray(W, dtype=dtype))
        bias = graph.constant(f"b{index + 1}", np.asarray(b, dtype=dtype))
        Z = graph.node("Gemm", [A, weights, bias], f"Z{index + 1}")
        A = Z if index == last else graph.node(op, [Z], f"A{index + 1}", **attributes)
    probabilities = _probabilities(graph, A, model.output, dtype)
    graph.node("Cast", [probabilities], "probabilities", to=TensorProto.FLOAT)
    # The argmax of the probabilities in the weights' dtype, as `Model.predict` takes it (float32 rounding
    # could turn a near tie of float64 probabilities into an exact one).
    best = graph.node("ArgMax", [probabilities], "best", axis=1, keepdims=0)
    classes = _classes_tensor(model.classes)
    graph.node("Gather", [graph.constant("classes", classes), best], "label", axis=0)
    n, k = model.n_features, len(model.classes)
    onnx_graph = helper.make_graph(
        graph.nodes,
        "backprop_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", n])],
        [
            helper.make_tensor_value_info(
                "label", TensorProto.STRING if classes.dtype == object else TensorProto.INT64, ["N"]
            ),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", k]),
        ],
        initializer=graph.initializers,
    )
    proto = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name=PRODUCER,
        doc_string=f"{model.activation} hidden layers {model.layer_sizes}, {model.output} output",
    )
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(model: engine.Model) -> bytes:
    """`to_onnx(model)` serialised (the bytes of a `.onnx` file)."""
    data: bytes = to_onnx(model).SerializeToString()
    return data

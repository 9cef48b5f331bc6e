"""ONNX export: the graph onnxruntime runs gives the engine's labels and probabilities, for every hidden
activation, both output layers, int and string labels, float32 and float64 weights."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest

import engine
from engine.activations import LEAKY_SLOPE
from engine.data import encode_labels, stratified_split
from service.onnx_export import HIDDEN_ACTIVATIONS, OPSET, export_onnx, to_onnx

# (number of classes, label kind): softmax needs three classes, two classes give the one-unit sigmoid.
CASES = {
    "softmax-int": (3, "int"),
    "softmax-str": (3, "str"),
    "sigmoid-int": (2, "int"),
    "sigmoid-str": (2, "str"),
}


def _dataset(n_classes: int, kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian blobs with features on very different scales (standardisation matters)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 2.0, size=(n_classes, 4))
    y_idx = np.repeat(np.arange(n_classes), 40)
    X = (centres[y_idx] + rng.normal(0.0, 1.5, size=(len(y_idx), 4))) * np.array([1.0, 100.0, 0.01, 5.0])
    y = np.array(["setosa", "versicolor", "virginica"])[y_idx] if kind == "str" else y_idx * 10 + 3
    return X, y


def _train(activation: str, n_classes: int, kind: str, **options: Any) -> tuple[engine.Model, np.ndarray]:
    X, y = _dataset(n_classes, kind)
    return _fit(X, y, activation, **options), X


def _fit(X: np.ndarray, y: np.ndarray, activation: str, **options: Any) -> engine.Model:
    settings: dict[str, Any] = {"hidden_layers": (8, 6), "epochs": 8, "batch_size": 16, "learning_rate": 0.02}
    config = engine.TrainConfig(activation=activation, seed=3, **(settings | options))
    return engine.train(X, y, config).model


def _validation_rows(X: np.ndarray, y: np.ndarray, model: engine.Model) -> np.ndarray:
    """The rows the trainer held out for validation (the split is the first draw of the seed's generator)."""
    config = engine.TrainConfig.from_dict(model.config)
    _, y_idx = encode_labels(y)
    _, validation = stratified_split(y_idx, config.validation_fraction, np.random.default_rng(config.seed))
    assert len(validation) > 0
    rows: np.ndarray = X[validation]
    return rows


def _run(model: engine.Model, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = onnxruntime.InferenceSession(export_onnx(model), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"input": X.astype(np.float32)})
    return label, probabilities


def _assert_matches_engine(model: engine.Model, X: np.ndarray) -> None:
    rows = X.astype(np.float32).astype(np.float64)  # what the float32 input of the graph holds
    label, probabilities = _run(model, rows)
    expected = model.predict_proba(rows)
    assert probabilities.dtype == np.float32 and probabilities.shape == expected.shape
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-5)
    assert label.tolist() == model.predict(rows).tolist()


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("activation", sorted(engine.ACTIVATIONS))
def test_to_onnx_matches_engine_on_validation_rows(activation: str, case: str) -> None:
    X, y = _dataset(*CASES[case])
    model = _fit(X, y, activation)
    assert model.output == case.split("-")[0]
    _assert_matches_engine(model, _validation_rows(X, y, model))
    _assert_matches_engine(model, X)  # and the training rows


@pytest.mark.parametrize("activation", sorted(engine.ACTIVATIONS))
def test_to_onnx_matches_engine_with_float64_weights(activation: str) -> None:
    model, X = _train(activation, 3, "int", dtype="float64")
    assert model.dtype == np.float64
    _assert_matches_engine(model, X)


def test_to_onnx_matches_engine_without_standardisation_and_softmax_over_two_classes() -> None:
    model, X = _train("tanh", 2, "str", standardize=False, output="softmax")
    assert model.output == "softmax" and len(model.classes) == 2
    _assert_matches_engine(model, X / 100.0)


def test_to_onnx_label_types_follow_the_classes() -> None:
    int_model, X = _train("relu", 3, "int")
    str_model, _ = _train("relu", 2, "str")
    int_labels, _ = _run(int_model, X[:5])
    str_labels, probabilities = _run(str_model, X[:5])
    assert int_labels.dtype == np.int64 and set(int_labels.tolist()) <= {3, 13, 23}
    assert str_labels.dtype == object and set(str_labels.tolist()) <= {"setosa", "versicolor"}
    assert probabilities.shape == (5, 2)  # one sigmoid unit, two probability columns


def test_to_onnx_declares_the_interface_at_the_fixed_opset() -> None:
    model, _ = _train("leaky_relu", 3, "str")
    proto = to_onnx(model)
    onnx.checker.check_model(proto, full_check=True)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)]
    graph = proto.graph
    (inp,) = graph.input
    assert inp.name == "input" and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["N", 4]
    outputs = {o.name: o.type.tensor_type for o in graph.output}
    assert outputs["label"].elem_type == onnx.TensorProto.STRING
    assert outputs["probabilities"].elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in outputs["probabilities"].shape.dim] == ["N", 3]
    ops = [node.op_type for node in graph.node]
    assert ops.count("Gemm") == 3 and ops.count("LeakyRelu") == 2 and "Softmax" in ops
    (leaky, *_) = (node for node in graph.node if node.op_type == "LeakyRelu")
    assert onnx.helper.get_attribute_value(leaky.attribute[0]) == pytest.approx(LEAKY_SLOPE)


def test_hidden_activations_cover_the_engine() -> None:
    assert set(HIDDEN_ACTIVATIONS) == set(engine.ACTIVATIONS)


def test_to_onnx_matches_engine_without_hidden_layers() -> None:
    model, X = _train("relu", 2, "int", hidden_layers=())
    assert model.layer_sizes == [4, 1]
    _assert_matches_engine(model, X)

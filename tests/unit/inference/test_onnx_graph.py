"""Calibration ranges for fixed int8 scales, and the fusion fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tuneforge.inference.onnx_graph import (
    CALIBRATION_PERCENTILE,
    activation_ranges,
    first_token_after_last_attention,
    fuse_transformer,
    uint8_params,
)


def scaled_ids_graph(path: Path) -> Path:
    """logits = float(input_ids) * 0.5 - 100, with the intermediate tensor ``x``."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["input_ids"], ["x"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["x", "half"], ["y"]),
            helper.make_node("Sub", ["y", "hundred"], ["logits"]),
        ],
        "g",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, None]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, None]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, None])],
        [
            helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
            helper.make_tensor("hundred", TensorProto.FLOAT, [], [100.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_ranges_are_the_exact_percentile_while_streaming(tmp_path: Path):
    rng = np.random.default_rng(0)
    # texts of very different lengths: the kept tails must stay exact across merges
    calibration = [rng.integers(0, 1_000_000, rng.integers(50, 900)) for _ in range(120)]
    model = scaled_ids_graph(tmp_path / "m.onnx")
    ranges = activation_ranges(model, ["x", "logits"], calibration)
    values = np.sort(np.concatenate(calibration).astype(np.float32))
    rank = max(1, int(np.floor(values.size * (1 - CALIBRATION_PERCENTILE / 100))))
    assert rank >= 3, "the test covers a percentile, not just min/max"
    assert ranges["x"] == (values[rank - 1], values[-rank])
    low, high = ranges["logits"]
    assert low == pytest.approx(values[rank - 1] * 0.5 - 100)
    assert high == pytest.approx(values[-rank] * 0.5 - 100)


def test_uint8_params_hold_zero_and_the_range():
    scale, zero = uint8_params(1.0, 3.0)  # widened to [0, 3]
    assert (scale, zero) == (pytest.approx(3 / 255), 0)
    scale, zero = uint8_params(-2.0, 2.0)
    assert scale == pytest.approx(4 / 255) and zero in (127, 128)
    for low, high in [(-5.0, 1.0), (-0.3, 7.5)]:
        scale, zero = uint8_params(low, high)
        assert (0 - zero) * scale == pytest.approx(low, abs=scale)
        assert (255 - zero) * scale == pytest.approx(high, abs=scale)
    assert uint8_params(0.0, 0.0)[0] > 0, "a constant-zero tensor still gets a usable scale"


def test_a_graph_without_attention_is_kept_as_exported(tmp_path: Path):
    raw = scaled_ids_graph(tmp_path / "raw.onnx")
    out = tmp_path / "out.onnx"
    assert not fuse_transformer(raw, out, num_heads=2, hidden_size=8, num_layers=2)
    assert out.read_bytes() == raw.read_bytes()


def attention_graph(pooling: str) -> onnx.ModelProto:
    """x -> Attention -> MatMul -> Add(x) -> LayerNorm -> (token 0 | mean over tokens)."""
    rng = np.random.default_rng(0)
    hidden = 8
    inits = [
        numpy_helper.from_array(rng.normal(size=(hidden, 3 * hidden)).astype(np.float32), "qkv"),
        numpy_helper.from_array(rng.normal(size=3 * hidden).astype(np.float32), "qkv_bias"),
        numpy_helper.from_array(rng.normal(size=(hidden, hidden)).astype(np.float32), "w"),
        numpy_helper.from_array(np.ones(hidden, np.float32), "gamma"),
        numpy_helper.from_array(np.zeros(hidden, np.float32), "beta"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
    ]
    nodes = [
        helper.make_node(
            "Attention", ["x", "qkv", "qkv_bias"], ["ctx"], domain="com.microsoft", num_heads=2
        ),
        helper.make_node("MatMul", ["ctx", "w"], ["proj"]),
        helper.make_node("Add", ["proj", "x"], ["res"]),
        helper.make_node("LayerNormalization", ["res", "gamma", "beta"], ["h"], axis=-1),
    ]
    if pooling == "first":
        nodes.append(helper.make_node("Gather", ["h", "zero"], ["out"], axis=1))
    else:
        nodes.append(helper.make_node("ReduceMean", ["h"], ["out"], axes=[1], keepdims=0))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None, hidden])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 8
    return model


def run_graph(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_after_the_last_attention_only_the_first_token_is_computed():
    model = attention_graph("first")
    x = np.random.default_rng(1).normal(size=(1, 7, 8)).astype(np.float32)
    before = run_graph(model, x)
    assert first_token_after_last_attention(model)
    slices = [n for n in model.graph.node if n.op_type == "Slice"]
    assert len(slices) == 2, "the attention output and the residual input"
    np.testing.assert_allclose(run_graph(model, x), before, rtol=1e-6, atol=1e-6)


def test_a_classifier_reading_every_token_is_left_alone():
    model = attention_graph("mean")
    before = model.SerializeToString()
    assert not first_token_after_last_attention(model)
    assert model.SerializeToString() == before

#!/usr/bin/env python3
"""Converts a CTranslate2 Whisper model folder (spec `WhisperSpec`, binary version 6)
into two ONNX graphs that `engines::whisper` runs:

- `encoder.onnx`: `mel` f32 [B, 80, 2*S] -> `cross_k_{l}` f32 [B, H, D, S] (keys already
  transposed for the decoder's matmul) and `cross_v_{l}` f32 [B, H, S, D] for every
  decoder layer `l`. The cross-attention projections run once per window here instead of
  once per decoding step.
- `decoder.onnx`: `tokens` i64 [B, T], `past_k_{l}`/`past_v_{l}` f32 [B, H, P, D] (P may
  be 0), `cross_k_{l}`/`cross_v_{l}` -> `logits` f32 [B, T, V],
  `present_k_{l}`/`present_v_{l}` f32 [B, H, P+T, D] (the KV cache) and `alignment` f32
  [B, A, T, S]: the scaled cross-attention scores (before the softmax) of the model's
  `alignment_heads` (from `config.json`), which word timestamps align text to audio with.

Only numpy and onnx are needed (the graph is written with `onnx.helper`; no torch).
Weights are stored as float32 (CTranslate2 ships float16). Usage:

    convert_whisper.py CT2_DIR OUT_DIR [--int8]

With `--int8` every linear layer (and the vocabulary projection) keeps int8 weights (see
`Graph.quantized_matmul` for the two schemes).
"""

import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 21
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(path: Path) -> dict:
    """Every variable of a CTranslate2 `model.bin`, aliases resolved. A model shipped in
    pieces (`model.bin.part1`, `model.bin.part2`, ... beside it) is read as their
    concatenation."""
    if path.is_file():
        data = path.read_bytes()
    else:
        parts = sorted(path.parent.glob(path.name + ".part*"), key=lambda p: int(p.name.rsplit("part", 1)[1]))
        if not parts:
            sys.exit(f"convert: neither {path} nor its parts exist")
        data = b"".join(part.read_bytes() for part in parts)
    pos = 0

    def take(fmt):
        nonlocal pos
        values = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return values[0]

    def string():
        nonlocal pos
        length = take("<H")
        text = data[pos : pos + length - 1].decode()
        pos += length
        return text

    version = take("<I")
    if version != 6:
        sys.exit(f"convert: CTranslate2 binary version {version}, expected 6")
    spec = string()
    if spec != "WhisperSpec":
        sys.exit(f"convert: spec {spec}, expected WhisperSpec")
    take("<I")  # spec revision
    variables = {}
    for _ in range(take("<I")):
        name = string()
        rank = take("<B")
        shape = [take("<I") for _ in range(rank)]
        dtype = CT2_DTYPES[take("<B")]
        size = take("<I")
        array = np.frombuffer(data, dtype=dtype, count=size // np.dtype(dtype).itemsize, offset=pos)
        pos += size
        variables[name] = array.reshape(shape)
    for _ in range(take("<I")):
        alias = string()
        variables[alias] = variables[string()]
    return variables


class Graph:
    """A small builder over `onnx.helper`: every op returns its output's name."""

    def __init__(self, weights: dict, quantize):
        self.weights = weights
        self.quantize = quantize
        self.nodes = []
        self.initializers = {}
        self.count = 0

    def name(self, hint):
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, array, hint="c"):
        name = self.name(hint)
        self.initializers[name] = numpy_helper.from_array(np.asarray(array), name)
        return name

    def weight(self, key, transpose=False):
        """A float32 initializer from a CT2 variable (each is created once)."""
        name = key.replace("/", ".") + (".T" if transpose else "")
        if name not in self.initializers:
            array = self.weights[key].astype(np.float32)
            if transpose:
                array = np.ascontiguousarray(array.T)
            self.initializers[name] = numpy_helper.from_array(array, name)
        return name

    def op(self, op_type, inputs, outputs=1, name=None, **attrs):
        names = [name] if name and outputs == 1 else [self.name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, **attrs))
        return names[0] if outputs == 1 else names

    def i64(self, *values):
        return self.const(np.array(values, dtype=np.int64), "i64")

    def scalar(self, value):
        return self.const(np.array(value, dtype=np.float32), "f32")

    # Layers -----------------------------------------------------------------------------

    def layer_norm(self, x, prefix):
        return self.op(
            "LayerNormalization",
            [x, self.weight(f"{prefix}/gamma"), self.weight(f"{prefix}/beta")],
            axis=-1,
            epsilon=1e-5,
        )

    def linear(self, x, prefix, rows=None):
        """`x @ W.T + b`; `rows` selects a slice of a fused weight (CT2 fuses q/k/v)."""
        weight = self.weights[f"{prefix}/weight"]
        bias = self.weights.get(f"{prefix}/bias")
        if rows is None:
            w = self.weight(f"{prefix}/weight", transpose=True)
            b = self.weight(f"{prefix}/bias") if bias is not None else None
        else:
            start, stop = rows
            w = self.const(np.ascontiguousarray(weight[start:stop].astype(np.float32).T), f"{prefix}.w")
            b = self.const(bias[start:stop].astype(np.float32), f"{prefix}.b") if bias is not None else None
        if self.quantize:
            return self.quantized_matmul(x, self.initializers.pop(w), b)
        y = self.op("MatMul", [x, w])
        return self.op("Add", [y, b]) if b is not None else y

    def quantized_matmul(self, x, weight, bias=None):
        """`x @ W (+ b)` with int8 weights, in one of two ways:

        - `dynamic` (the encoder): one scale per output column, activations quantized per
          call with one scale for the whole tensor (`DynamicQuantizeMatMul`, the fastest
          kernels for the encoder's large matrices). A row's result therefore depends on
          the other rows of the tensor: the encoder runs one window per call.
        - `blocks` (the decoder): 8-bit blocks of 32 input rows with a scale per block and
          output column (`MatMulNBits`, int8 compute at `accuracy_level` 4); activations
          are quantized per row and block, so batching windows changes nothing."""
        w = numpy_helper.to_array(weight) if not isinstance(weight, np.ndarray) else weight
        k, n = w.shape
        if self.quantize == "dynamic":
            scale = np.maximum(np.abs(w).max(axis=0), 1e-8) / 127.0
            q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
            inputs = [x, self.const(q, "wq"), self.const(scale.astype(np.float32), "ws"), self.const(np.zeros(n, np.int8), "wz")]
            inputs += [bias] if bias is not None else []
            return self.op("DynamicQuantizeMatMul", inputs, domain="com.microsoft")
        block = 32
        pad = (-k) % block
        blocks = np.pad(w, ((0, pad), (0, 0))).T.reshape(n, -1, block)  # [N, K/32, 32]
        scale = np.maximum(np.abs(blocks).max(axis=2), 1e-8) / 127.0
        q = (np.clip(np.round(blocks / scale[:, :, None]), -127, 127) + 128).astype(np.uint8)
        inputs = [x, self.const(q, "wq"), self.const(scale.astype(np.float32).reshape(-1), "ws")]
        inputs += ["", "", bias] if bias is not None else []
        return self.op(
            "MatMulNBits", inputs, domain="com.microsoft", K=k, N=n, bits=8, block_size=block, accuracy_level=4
        )

    def heads(self, x, num_heads, head_dim):
        """[B, T, H*D] -> [B, H, T, D]."""
        y = self.op("Reshape", [x, self.i64(0, -1, num_heads, head_dim)])
        return self.op("Transpose", [y], perm=[0, 2, 1, 3])

    def merge_heads(self, x, width):
        """[B, H, T, D] -> [B, T, H*D]."""
        y = self.op("Transpose", [x], perm=[0, 2, 1, 3])
        return self.op("Reshape", [y, self.i64(0, -1, width)])

    def ffn(self, x, prefix):
        h = self.layer_norm(x, f"{prefix}/layer_norm")
        h = self.op("Gelu", [self.linear(h, f"{prefix}/linear_0")])
        return self.op("Add", [x, self.linear(h, f"{prefix}/linear_1")])

    def model(self, inputs, outputs, name):
        graph = helper.make_graph(self.nodes, name, inputs, outputs, list(self.initializers.values()))
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="scaigrid")
        model.ir_version = 10
        onnx.checker.check_model(model, full_check=False)
        return model


def dims(weights):
    width = weights["encoder/position_encodings/encodings"].shape[1]
    heads = int(weights["encoder/num_heads"])
    return width, heads, width // heads


def encoder(weights: dict, decoder_layers: int, quantize) -> onnx.ModelProto:
    g = Graph(weights, quantize)
    width, heads, head_dim = dims(weights)
    x = g.op("Gelu", [g.op("Conv", ["mel", g.weight("encoder/conv1/weight"), g.weight("encoder/conv1/bias")], pads=[1, 1])])
    x = g.op("Gelu", [g.op("Conv", [x, g.weight("encoder/conv2/weight"), g.weight("encoder/conv2/bias")], pads=[1, 1], strides=[2])])
    x = g.op("Transpose", [x], perm=[0, 2, 1])  # [B, S, W]
    frames = g.op("Slice", [g.op("Shape", [x]), g.i64(1), g.i64(2)])
    positions = g.op("Slice", [g.weight("encoder/position_encodings/encodings"), g.i64(0), frames, g.i64(0)])
    x = g.op("Add", [x, positions])
    layers = sum(1 for key in weights if key.startswith("encoder/layer_") and key.endswith("ffn/linear_0/weight"))
    for layer in range(layers):
        prefix = f"encoder/layer_{layer}"
        h = g.layer_norm(x, f"{prefix}/self_attention/layer_norm")
        q, k, v = (g.linear(h, f"{prefix}/self_attention/linear_0", (i * width, (i + 1) * width)) for i in range(3))
        # ONNX Runtime's fused attention (flash attention on CPU): no [S, S] score matrix.
        attn = g.op("MultiHeadAttention", [q, k, v], domain="com.microsoft", num_heads=heads)
        x = g.op("Add", [x, g.linear(attn, f"{prefix}/self_attention/linear_1")])
        x = g.ffn(x, f"{prefix}/ffn")
    x = g.layer_norm(x, "encoder/layer_norm")
    outputs = []
    for layer in range(decoder_layers):
        prefix = f"decoder/layer_{layer}/attention/linear_1"
        k = g.heads(g.linear(x, prefix, (0, width)), heads, head_dim)
        v = g.heads(g.linear(x, prefix, (width, 2 * width)), heads, head_dim)
        g.op("Transpose", [k], name=f"cross_k_{layer}", perm=[0, 1, 3, 2])
        g.op("Identity", [v], name=f"cross_v_{layer}")
        outputs += [
            helper.make_tensor_value_info(f"cross_k_{layer}", TensorProto.FLOAT, ["batch", heads, head_dim, "frames"]),
            helper.make_tensor_value_info(f"cross_v_{layer}", TensorProto.FLOAT, ["batch", heads, "frames", head_dim]),
        ]
    inputs = [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["batch", 80, "mel_frames"])]
    return g.model(inputs, outputs, "whisper_encoder")


def decoder(weights: dict, layers: int, quantize, alignment_heads) -> onnx.ModelProto:
    g = Graph(weights, quantize)
    width, heads, head_dim = dims(weights)
    scale = g.scalar(head_dim**-0.5)
    embeddings = g.weight("decoder/embeddings/weight")
    shape = g.op("Shape", ["tokens"])
    steps = g.op("Slice", [shape, g.i64(1), g.i64(2)])  # T
    past = g.op("Slice", [g.op("Shape", ["past_k_0"]), g.i64(2), g.i64(3)])  # P
    total = g.op("Add", [past, steps])  # P + T
    positions = g.op("Slice", [g.weight("decoder/position_encodings/encodings"), past, total, g.i64(0)])
    x = g.op("Add", [g.op("Gather", [embeddings, "tokens"]), positions])
    # Causal mask [T, P+T]: query i (absolute P+i) sees keys 0..=P+i.
    zero, one = g.i64(0), g.i64(1)
    query_pos = g.op("Unsqueeze", [g.op("Range", [g.op("Squeeze", [past]), g.op("Squeeze", [total]), g.op("Squeeze", [one])]), one])
    key_pos = g.op("Unsqueeze", [g.op("Range", [g.op("Squeeze", [zero]), g.op("Squeeze", [total]), g.op("Squeeze", [one])]), zero])
    mask = g.op("Where", [g.op("Greater", [key_pos, query_pos]), g.scalar(-1e9), g.scalar(0.0)])
    alignment = []
    for layer in range(layers):
        prefix = f"decoder/layer_{layer}"
        h = g.layer_norm(x, f"{prefix}/self_attention/layer_norm")
        q, k, v = (
            g.heads(g.linear(h, f"{prefix}/self_attention/linear_0", (i * width, (i + 1) * width)), heads, head_dim)
            for i in range(3)
        )
        k_all = g.op("Concat", [f"past_k_{layer}", k], name=f"present_k_{layer}", axis=2)
        v_all = g.op("Concat", [f"past_v_{layer}", v], name=f"present_v_{layer}", axis=2)
        scores = g.op("MatMul", [g.op("Mul", [q, scale]), g.op("Transpose", [k_all], perm=[0, 1, 3, 2])])
        attn = g.op("MatMul", [g.op("Softmax", [g.op("Add", [scores, mask])], axis=-1), v_all])
        x = g.op("Add", [x, g.linear(g.merge_heads(attn, width), f"{prefix}/self_attention/linear_1")])
        # Cross-attention over the encoder's keys and values.
        h = g.layer_norm(x, f"{prefix}/attention/layer_norm")
        q = g.heads(g.linear(h, f"{prefix}/attention/linear_0"), heads, head_dim)
        scores = g.op("MatMul", [g.op("Mul", [q, scale]), f"cross_k_{layer}"])
        for head in (h for l, h in alignment_heads if l == layer):
            alignment.append(g.op("Slice", [scores, g.i64(head), g.i64(head + 1), g.i64(1)]))
        weights_ = g.op("Softmax", [scores], axis=-1)
        attn = g.op("MatMul", [weights_, f"cross_v_{layer}"])
        x = g.op("Add", [x, g.linear(g.merge_heads(attn, width), f"{prefix}/attention/linear_2")])
        x = g.ffn(x, f"{prefix}/ffn")
    x = g.layer_norm(x, "decoder/layer_norm")
    # Logits of every position: the prompt step needs the start-of-transcript row too
    # (the no-speech probability), later steps have one position.
    projection = np.ascontiguousarray(weights["decoder/embeddings/weight"].astype(np.float32).T)
    if quantize:
        g.op("Identity", [g.quantized_matmul(x, projection)], name="logits")
    else:
        g.op("MatMul", [x, g.const(projection, "projection")], name="logits")
    g.op("Concat", alignment, name="alignment", axis=1)
    vocab = weights["decoder/embeddings/weight"].shape[0]
    inputs = [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "steps"])]
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "steps", vocab]),
        helper.make_tensor_value_info("alignment", TensorProto.FLOAT, ["batch", len(alignment_heads), "steps", "frames"]),
    ]
    for layer in range(layers):
        for kind in ("k", "v"):
            inputs.append(helper.make_tensor_value_info(f"past_{kind}_{layer}", TensorProto.FLOAT, ["batch", heads, "past", head_dim]))
            outputs.append(helper.make_tensor_value_info(f"present_{kind}_{layer}", TensorProto.FLOAT, ["batch", heads, "total", head_dim]))
    for layer in range(layers):
        inputs.append(helper.make_tensor_value_info(f"cross_k_{layer}", TensorProto.FLOAT, ["batch", heads, head_dim, "frames"]))
        inputs.append(helper.make_tensor_value_info(f"cross_v_{layer}", TensorProto.FLOAT, ["batch", heads, "frames", head_dim]))
    return g.model(inputs, outputs, "whisper_decoder")


def save(model: onnx.ModelProto, path: Path) -> None:
    partial = path.with_name(path.name + ".partial")
    onnx.save_model(model, str(partial))
    os.replace(partial, path)
    print(f"convert: wrote {path}", flush=True)


def main() -> None:
    args = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
    quantize = "--int8" in sys.argv
    if len(args) != 2:
        sys.exit(__doc__)
    source, out = Path(args[0]), Path(args[1])
    weights = read_ct2(source / "model.bin")
    config = json.loads((source / "config.json").read_text())
    alignment_heads = [tuple(head) for head in config.get("alignment_heads", [])]
    if not alignment_heads:
        sys.exit("convert: config.json has no alignment_heads (word timestamps need them)")
    layers = sum(1 for key in weights if key.startswith("decoder/layer_") and key.endswith("ffn/linear_0/weight"))
    out.mkdir(parents=True, exist_ok=True)
    save(encoder(weights, layers, "dynamic" if quantize else None), out / "encoder.onnx")
    save(decoder(weights, layers, "blocks" if quantize else None, alignment_heads), out / "decoder.onnx")


if __name__ == "__main__":
    main()

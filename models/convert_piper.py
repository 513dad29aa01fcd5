#!/usr/bin/env python3
"""Splits a Piper (VITS) voice into the two ONNX graphs `engines::piper` runs:

- `encoder.onnx`: `input` i64 [1, N] phoneme ids, `input_lengths` i64 [1], `scales` f32
  [3] -> `latent` f32 [1, C, T]: text encoder, durations, alignment and flow (everything
  before the HiFi-GAN decoder), T frames of 256 samples each.
- `decoder.onnx`: `latent` f32 [1, C, T] -> `output` f32 [1, 1, 1, 256*T]: the HiFi-GAN
  decoder, convolutions only, so any span of frames decodes on its own given a few frames
  of context on each side.

Together they compute exactly what the voice's single graph computes (same nodes, same
weights); apart, a stream's first audio needs only the encoder and a short first span
of the decoder. Usage:

    convert_piper.py VOICE_DIR OUT_DIR VOICE.onnx
"""

import sys
from pathlib import Path

import onnx
from onnx import utils

LATENT = "latent"


def decoder_input(graph: onnx.GraphProto) -> str:
    """The tensor the decoder's first convolution (`dec.conv_pre`) reads."""
    for node in graph.node:
        if "dec.conv_pre.weight" in node.input:
            return node.input[0]
    sys.exit("convert_piper: no dec.conv_pre convolution in the graph")


def latent_channels(graph: onnx.GraphProto) -> int:
    for weight in graph.initializer:
        if weight.name == "dec.conv_pre.weight":
            return weight.dims[1]
    sys.exit("convert_piper: no dec.conv_pre.weight")


def rename(model: onnx.ModelProto, old: str, channels: int) -> None:
    """Names the boundary tensor `latent` and gives it its full type, f32 [1, C, T]."""
    graph = model.graph
    for node in graph.node:
        node.input[:] = [LATENT if name == old else name for name in node.input]
        node.output[:] = [LATENT if name == old else name for name in node.output]
    typed = onnx.helper.make_tensor_value_info(LATENT, onnx.TensorProto.FLOAT, [1, channels, "frames"])
    for values in (graph.input, graph.output):
        for value in values:
            if value.name == old:
                value.CopyFrom(typed)
    kept = [v for v in graph.value_info if v.name != old]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def main() -> None:
    voice_dir, out_dir, voice = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    model = onnx.load(str(voice_dir / voice))
    boundary = decoder_input(model.graph)
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    extractor = utils.Extractor(model)
    encoder = extractor.extract_model(inputs, [boundary])
    decoder = extractor.extract_model([boundary], outputs)
    channels = latent_channels(model.graph)
    for part in (encoder, decoder):
        rename(part, boundary, channels)
        onnx.checker.check_model(part)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(encoder, str(out_dir / "encoder.onnx"))
    onnx.save(decoder, str(out_dir / "decoder.onnx"))


if __name__ == "__main__":
    main()

"""Inference backends: ONNX Runtime everywhere, ais_bench's InferSession on Ascend."""

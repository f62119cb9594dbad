"""Data path and device boundary of the RepVGG offline-inference pipeline.

`repvgg_model` knows the network; this package knows everything that crosses the
boundary with the Ascend tools (and their ONNX Runtime stand-in): the image
transforms, the file formats (one module per format under `formats/`) and the
inference backends.
"""

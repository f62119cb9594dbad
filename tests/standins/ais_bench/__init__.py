"""Stand-in for Huawei's ais_bench package (tests only): `ais_bench.infer.interface` on ONNX Runtime."""

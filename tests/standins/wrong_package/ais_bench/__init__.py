"""Stand-in for the unrelated PyPI package ais-bench-benchmark (an LLM evaluation tool) that also
installs the import name `ais_bench`, with `ais_bench.benchmark` and no `ais_bench.infer` (tests only)."""

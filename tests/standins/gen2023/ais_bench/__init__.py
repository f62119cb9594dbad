"""Stand-in for Huawei's ais_bench package as of tools commit 9d6da90, 2023-06 (tests only)."""

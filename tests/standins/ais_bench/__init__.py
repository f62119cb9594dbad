"""Stand-in for Huawei's ais_bench package, 2025 release line (tests only); gen2023/ holds the 2023 one."""

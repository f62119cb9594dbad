"""Stand-in for `npu-smi` (tests only): `npu-smi info` in the driver's table layout.

The chip name comes from `$STANDIN_NPU_CHIP` (default 310P3). A 310 card lists four
chips, as the real one does; a 310P card one.
"""

from __future__ import annotations

import json
import os
import sys

HEADER = """+------------------------------------------------------------------------------------------------+
| npu-smi 23.0.0                   Version: 23.0.0                                               |
+---------------------------+---------------+----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)                       |
+===========================+===============+====================================================+"""
ROW = """| {npu:<5} {name:<19} | OK            | NA          43                0    / 0             |
| {chip:<25} | 0000:{bus:02X}:00.0  | 0           1590 / 21534                           |
+===========================+===============+====================================================+"""


def main() -> int:
    if os.environ.get("STANDIN_LOG"):
        with open(os.environ["STANDIN_LOG"], "a", encoding="utf-8") as log:
            log.write(json.dumps(["npu-smi", *sys.argv[1:]]) + "\n")
    if sys.argv[1:2] != ["info"]:
        print("Usage: npu-smi info", file=sys.stderr)
        return 1
    chip = os.environ.get("STANDIN_NPU_CHIP", "310P3")
    chips = 4 if chip == "310" else 1
    print(HEADER)
    for index in range(chips):
        print(ROW.format(npu=0 if chip != "310" else index, name=chip, chip=index if chip == "310" else 0,
                         bus=0x3B + index))
    return 0


if __name__ == "__main__":
    sys.exit(main())

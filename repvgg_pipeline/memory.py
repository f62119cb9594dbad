"""How much memory a step may use: refuse an option that cannot fit before any work starts.

`--crop 60000` needs 43 GB per float32 tensor; found out image by image it turns into one
MemoryError per image (issue 9, item 18). Checking the estimate against the memory available
now gives one line with the reason instead.
"""

from __future__ import annotations

import os

GIB = 1024 ** 3


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux MemAvailable), None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def shortfall(needed: int) -> str | None:
    """'needs X GiB, Y GiB available' when `needed` bytes exceed the available memory, else None."""
    available = available_memory()
    if available is None or needed <= available:
        return None
    return f"needs at least {needed / GIB:.1f} GiB of memory, {available / GIB:.1f} GiB available"

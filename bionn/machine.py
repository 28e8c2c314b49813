"""What this machine is, read from /proc/cpuinfo: for checks (precision) and for benchmark records."""

from __future__ import annotations

import platform
from pathlib import Path

CPUINFO = "/proc/cpuinfo"


def _cpuinfo_field(name: str, path: str = CPUINFO) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags(path: str = CPUINFO) -> set[str]:
    """The CPU's feature flags (avx512_bf16, amx_bf16, ...); empty where /proc/cpuinfo is missing."""
    return set((_cpuinfo_field("flags", path) or "").split())


def cpu_model(path: str = CPUINFO) -> str:
    """The CPU model name, as BENCHMARKS.md records it with every figure."""
    return _cpuinfo_field("model name", path) or platform.processor()

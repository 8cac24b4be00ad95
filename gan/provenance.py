"""Where a run ran: versions, host, git commit, the allocator, the CPUs and their model and vector
instruction sets (config.json "environment"). TensorFlow's CPU kernels are chosen by instruction set, so
the same seed and commit train the same run to the last bit only on CPUs of the same kind: the record
says whether two runs can be expected to agree bitwise."""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from pathlib import Path

from gan.contract import METRICS_VERSION


def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def version(module: str, *distributions: str) -> str:
    """A package's version without importing it (TensorFlow's import takes seconds, and a run found finished
    needs none of it): the loaded module's own, else its installed distribution's, else the import's."""
    import importlib
    import importlib.metadata
    if module in sys.modules:
        return sys.modules[module].__version__
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return importlib.import_module(module).__version__


def environment() -> dict[str, str]:
    import numpy as np

    from gan.fastpath import cpus_given, loaded_allocator
    return {"python": sys.version.split()[0],
            "tensorflow": version("tensorflow", "tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly"),
            "keras": version("keras", "keras", "keras-nightly"),
            "numpy": np.__version__, "host": socket.gethostname(),
            "platform": platform.platform(), "git_commit": git_commit(), "argv": " ".join(sys.argv),
            "metrics_version": METRICS_VERSION,
            "allocator": loaded_allocator() or "system (glibc malloc: slower, see gan/fastpath.py)",
            "cpus": cpus_given(), **cpu_kind()}


VECTOR_ISAS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")  # oneDNN's choices


def cpu_kind(cpuinfo: str = "/proc/cpuinfo") -> dict[str, str]:
    """{"cpu_model": ..., "cpu_isa": "avx2 fma avx512f ..."} from Linux's /proc/cpuinfo; the platform's
    processor name and no instruction sets elsewhere."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return {"cpu_model": platform.processor() or "unknown", "cpu_isa": "unknown"}
    fields = dict(line.split(":", 1) for line in text.splitlines()[:64] if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"cpu_model": fields.get("model name", platform.processor() or "unknown"),
            "cpu_isa": " ".join(isa for isa in VECTOR_ISAS if isa in flags)}

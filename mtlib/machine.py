"""The machine a low-precision result was measured on.

MKL, oneDNN and ATen choose their kernels by CPU at run time, so the last bits of float results,
and which values tie after rounding in float16 or bfloat16, differ between machines. A result
of that kind is reported with :func:`machine_info` beside it: by the training chapter, in every
record of the training sweep, and in the tables of ``benchmarks/``. Its own module, not a part of
:mod:`mtlib.training`, as the benchmarks need it too.

Chapter: training, training_valid.
"""

from __future__ import annotations

import os
import platform

import torch

#: Environment variables that cap the instruction sets of ATen, MKL and oneDNN, or the threads.
CAP_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS")


def cpu_model() -> str:
    """The CPU's ``model name`` from ``/proc/cpuinfo``, else ``platform.processor()``, else ``"unknown"``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, str | int]:
    """Where a number was measured: CPU, ATen capability, threads, torch, caps and GPU.

    Returns:
        ``{"cpu": model name, "capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "caps": the set
        variables of CAP_VARIABLES as "NAME=value, ..." or "none", "gpu": the CUDA device name
        or "none"}``.

    Examples:
        >>> sorted(machine_info())
        ['capability', 'caps', 'cpu', 'gpu', 'threads', 'torch']
    """
    caps = ", ".join(f"{name}={os.environ[name]}" for name in CAP_VARIABLES if os.environ.get(name))
    return {
        "cpu": cpu_model(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "caps": caps or "none",
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
    }

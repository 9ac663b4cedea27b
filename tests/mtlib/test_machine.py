"""mtlib.machine: where a low-precision number was measured (CPU, capability, caps, GPU)."""

import builtins

import torch

from mtlib.machine import CAP_VARIABLES, cpu_model, machine_info


def test_machine_info_keys_and_caps(monkeypatch):
    for name in CAP_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    info = machine_info()
    assert sorted(info) == ["capability", "caps", "cpu", "gpu", "threads", "torch"]
    assert info["cpu"] == cpu_model() and info["cpu"].strip() == info["cpu"] and info["cpu"]
    assert info["capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["threads"] == torch.get_num_threads() and info["torch"] == torch.__version__
    assert info["caps"] == "none"
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "SSE4_2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert machine_info()["caps"] == "MKL_ENABLE_INSTRUCTIONS=SSE4_2, OMP_NUM_THREADS=1"


def test_cpu_model_falls_back_to_platform(monkeypatch):
    real_open = builtins.open

    def no_cpuinfo(path, *args, **kwargs):
        if path == "/proc/cpuinfo":
            raise OSError("no /proc here")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_cpuinfo)
    monkeypatch.setattr("platform.processor", lambda: "")
    assert cpu_model() == "unknown"
    monkeypatch.setattr("platform.processor", lambda: "arm")
    assert cpu_model() == "arm"

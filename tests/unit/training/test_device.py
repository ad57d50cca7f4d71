import torch

from tuneforge.errors import InputError
from tuneforge.training import device


def test_fp32_is_plain_and_auto_follows_cpu_flags(monkeypatch):
    cpu = torch.device("cpu")
    assert device.resolve_precision("fp32", cpu) is None
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: True)
    assert device.resolve_precision("auto", cpu) is torch.bfloat16
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
    assert device.resolve_precision("auto", cpu) is None


def test_bf16_without_hardware_is_a_clear_input_error(monkeypatch):
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
    try:
        device.resolve_precision("bf16", torch.device("cpu"))
    except InputError as exc:
        assert "--precision auto or fp32" in str(exc)
    else:
        raise AssertionError("expected InputError")


def test_cpu_flag_detection_matches_proc_cpuinfo():
    with open("/proc/cpuinfo") as fh:
        text = fh.read()
    has = " avx512_bf16" in text or " amx_bf16" in text
    assert device.cpu_has_fast_bf16() is has

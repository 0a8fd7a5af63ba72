"""``python -m batcher`` flags: each one reaches its setting and overrides the environment;
a setting without its flag keeps the environment's value."""
from __future__ import annotations

import pytest

from batcher.__main__ import build_settings, parse_args


def settings(monkeypatch, argv: list[str], **env: str):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return build_settings(parse_args(argv))


def test_every_flag_reaches_its_setting(monkeypatch):
    s = settings(monkeypatch, ["--worker-id", "w9", "--max-batch-size", "64", "--max-wait-ms", "7",
                               "--metrics-port", "0", "--precision", "int8", "--compile", "compile",
                               "--decode-device", "cuda", "--no-pin-memory"])
    assert (s.worker_id, s.worker_batch_size, s.worker_max_wait_ms, s.worker_metrics_port) == ("w9", 64, 7, 0)
    assert (s.clip_precision, s.clip_compile, s.worker_decode_device, s.clip_pin_memory) == \
        ("int8", "compile", "cuda", False)


def test_flags_override_the_environment_and_absent_flags_keep_it(monkeypatch):
    env = {"CLIP_COMPILE": "cudagraphs", "WORKER_DECODE_DEVICE": "cuda", "CLIP_PIN_MEMORY": "false"}
    kept = settings(monkeypatch, [], **env)
    assert (kept.clip_compile, kept.worker_decode_device, kept.clip_pin_memory) == ("cudagraphs", "cuda", False)
    flagged = settings(monkeypatch, ["--compile", "off", "--decode-device", "cpu", "--pin-memory"], **env)
    assert (flagged.clip_compile, flagged.worker_decode_device, flagged.clip_pin_memory) == ("off", "cpu", True)


def test_an_unknown_choice_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--compile", "tensorrt"])
    assert exc.value.code == 2 and "invalid choice: 'tensorrt'" in capsys.readouterr().err

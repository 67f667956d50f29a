"""`bench codec` and `bench net` run end to end at small sizes and print the documented
keys; figures are reported by the benchmarks, never asserted here, only their relations."""

from __future__ import annotations

import json
from typing import Any

import pytest

from solora_node import cli


def _bench(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert cli.main(["bench", *argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert isinstance(result, dict)
    return result


def test_bench_codec_reports_every_step_against_memcpy(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["codec", "--layers", "2", "--batch-seconds", "0.01", "--repeats", "1"]
    result = _bench(capsys, *argv, "--step-model", "tiny")
    assert result["checksum"] == "xxh3-128"
    large = result["large"]
    assert large["payload_bytes"] > 32 << 20
    assert set(large["ratio_to_memcpy"]) == {"encode", "decode", "checksum", "validate"}
    # Validation of a 32 MiB fp16 block allocates a scratch piece, not a float32 copy.
    assert large["validate_peak_bytes"] < large["payload_bytes"] // 8
    step = result["local_step"]
    assert step["step_seconds"] > 0
    assert step["round_encode_decode_fraction"] == pytest.approx(
        result["encode_decode_seconds"] / step["step_seconds"], rel=1e-2, abs=1e-6
    )


def test_bench_net_compares_like_with_like(capsys: pytest.CaptureFixture[str]) -> None:
    result = _bench(capsys, "net", "--total-mib", "2", "--delta-mib", "1", "--repeats", "1")
    assert result["tls"] and result["payload_bytes"] > 2 << 20
    for key in ("grpc_mb_s", "grpc_bare_mb_s", "raw_tcp_tls_mb_s", "raw_tcp_mb_s"):
        assert result[key] > 0
    assert result["ratio_to_bare_grpc"] == pytest.approx(
        result["grpc_mb_s"] / result["grpc_bare_mb_s"], abs=2e-3
    )

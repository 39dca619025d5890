"""Settings: seed defaults, parsing, and start-up failures naming the variable."""

from __future__ import annotations

import pytest

from gpu_backtest.core.config import ConfigError, Settings, parse_bytes


def test_seed_defaults() -> None:
    s = Settings.from_env({})
    assert (s.host, s.port, s.debug) == ("0.0.0.0", 5050, True)
    assert s.database_url is None and s.gpu_device == 0 and s.max_concurrent_jobs == 10
    assert s.gpu_memory_limit == 0.9 and s.api_key_required is False and s.api_key is None
    assert s.tiingo_api_key is None
    assert (s.lease_s, s.heartbeat_s, s.max_attempts, s.shutdown_grace_s, s.auto_migrate) == (30.0, 10.0, 3, 30.0, True)


def test_parsing() -> None:
    s = Settings.from_env({"GPU_SERVER_PORT": "8080", "GPU_SERVER_DEBUG": "false", "API_KEY_REQUIRED": "yes",
                           "GPU_SERVER_API_KEY": "k", "GPU_BACKTEST_CPU_MEMORY_LIMIT": "64MiB"})
    assert s.port == 8080 and s.debug is False and s.api_key_required and s.cpu_memory_limit == 64 * 2**20
    assert parse_bytes("X", "2GB") == 2 * 10**9 and parse_bytes("X", "1024") == 1024


@pytest.mark.parametrize(
    ("env", "var"),
    [
        ({"GPU_SERVER_PORT": "http"}, "GPU_SERVER_PORT"),
        ({"GPU_SERVER_PORT": "70000"}, "GPU_SERVER_PORT"),
        ({"GPU_MEMORY_LIMIT": "1.5"}, "GPU_MEMORY_LIMIT"),
        ({"MAX_CONCURRENT_JOBS": "0"}, "MAX_CONCURRENT_JOBS"),
        ({"GPU_SERVER_DEBUG": "maybe"}, "GPU_SERVER_DEBUG"),
        ({"API_KEY_REQUIRED": "true"}, "GPU_SERVER_API_KEY"),
        ({"GPU_BACKTEST_BACKEND": "tpu"}, "GPU_BACKTEST_BACKEND"),
        ({"GPU_BACKTEST_CPU_MEMORY_LIMIT": "lots"}, "GPU_BACKTEST_CPU_MEMORY_LIMIT"),
        ({"GPU_BACKTEST_LEASE_S": "0"}, "GPU_BACKTEST_LEASE_S"),
        ({"GPU_BACKTEST_LEASE_S": "soon"}, "GPU_BACKTEST_LEASE_S"),
        ({"GPU_BACKTEST_HEARTBEAT_S": "30"}, "GPU_BACKTEST_HEARTBEAT_S"),  # not shorter than the lease
        ({"GPU_BACKTEST_LEASE_S": "5", "GPU_BACKTEST_HEARTBEAT_S": "6"}, "GPU_BACKTEST_HEARTBEAT_S"),
        ({"GPU_BACKTEST_MAX_ATTEMPTS": "0"}, "GPU_BACKTEST_MAX_ATTEMPTS"),
        ({"GPU_BACKTEST_AUTO_MIGRATE": "sometimes"}, "GPU_BACKTEST_AUTO_MIGRATE"),
    ],
)
def test_invalid_values_name_the_variable(env, var) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert var in str(info.value)


def test_every_setting_is_documented_in_the_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for var, _default, _doc in Settings.documentation():
        assert f"`{var}`" in readme, var

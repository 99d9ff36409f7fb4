"""Settings from the environment."""
from __future__ import annotations

import pytest

from app import config
from app.runner.settings import runner_from_env
from app.shared_settings import ConfigError


def test_defaults_and_empty_variables_count_as_unset() -> None:
    settings = config.from_env({"AGENT_FSYNC": "", "METRICS_WINDOW_DAYS": "",
                                "AGENT_LOGS_DIR": ""})
    assert settings["AGENT_FSYNC"] is True
    assert settings["METRICS_WINDOW_DAYS"] == 7
    assert settings["AGENT_LOGS_DIR"] == config.DEFAULTS["AGENT_LOGS_DIR"]


@pytest.mark.parametrize("value,expected", [("0", False), ("off", False), ("1", True),
                                            ("yes", True)])
def test_fsync_flag(value, expected) -> None:
    assert config.from_env({"AGENT_FSYNC": value})["AGENT_FSYNC"] is expected


@pytest.mark.parametrize("name,value", [("METRICS_WINDOW_DAYS", "0"),
                                        ("METRICS_WINDOW_DAYS", "366"),
                                        ("METRICS_WINDOW_DAYS", "week"),
                                        ("AGENT_MAX_BODY_BYTES", "-5")])
def test_out_of_range_settings_name_the_variable(name, value) -> None:
    with pytest.raises(ValueError, match=name):
        config.from_env({name: value})


@pytest.mark.parametrize("token", ["short", "tøken-with-ünicode-0123456789",
                                   "a token with spaces in it"])
def test_the_server_and_the_runner_refuse_a_token_alike(token, tmp_path) -> None:
    env = {"AGENT_API_TOKEN": token, "AGENT_WORKDIR": str(tmp_path)}
    with pytest.raises(ConfigError) as server:
        config.from_env(env)
    with pytest.raises(ConfigError) as runner:
        runner_from_env(env)
    assert str(server.value) == str(runner.value)
    assert token not in str(server.value)

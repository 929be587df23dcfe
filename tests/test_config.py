"""Node settings: flags over environment over file, and clear errors for settings that cannot work."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftkv.config import ConfigError, load_config, parse_peers


def test_flags_win_over_environment_which_wins_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file = tmp_path / "node.toml"
    config_file.write_text('id = "from-file"\nlisten = "127.0.0.1:9000"\ntick_ms = 20\ninsecure = true\n')
    monkeypatch.setenv("RAFTKV_LISTEN", "127.0.0.1:9001")
    monkeypatch.setenv("RAFTKV_PEERS", "n2=http://127.0.0.1:9002")
    config = load_config({"id": "n1", "listen": None}, config_file)
    assert (config.id, config.listen, config.tick_ms) == ("n1", "127.0.0.1:9001", 20)
    assert config.members == {"n1": "http://127.0.0.1:9001", "n2": "http://127.0.0.1:9002"}


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        ({"id": "n1", "peers": {"n1": "http://x:1"}, "insecure": True}, {}, "own id"),
        ({"id": "n1", "heartbeat_ticks": 20}, {}, "heartbeat_ticks must be smaller"),
        ({"id": "n1", "peers": {"n2": "ftp://x:1"}, "insecure": True}, {}, "http:// or https:// URL"),
        ({"id": "n1", "listen": "8080"}, {}, "HOST:PORT"),
        ({"id": "n1"}, {"RAFTKV_TICKMS": "5"}, "RAFTKV_TICKMS: no such setting"),
        ({"id": "n1", "cert_file": "c.pem"}, {}, "cert_file and key_file go together"),
        ({"id": "n1", "peers": {"n2": "http://x:1"}}, {}, "--token, --token-file or RAFTKV_TOKEN"),
        ({"id": "n1", "token_file": "/nonexistent/token"}, {}, "cannot read /nonexistent/token"),
    ],
)
def test_settings_that_cannot_work_are_refused_clearly(
    flags: dict[str, object], environ: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        load_config(flags)


def test_peer_flags_must_be_id_equals_url() -> None:
    assert parse_peers(["n2=http://h:1"]) == {"n2": "http://h:1"}
    with pytest.raises(ConfigError):
        parse_peers(["n2"])

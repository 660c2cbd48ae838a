"""The local Prefect server gets an API auth string whenever it listens beyond loopback."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from deployments import server
from model.errors import ServerError


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOMELAB_HOME", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.203.0.1", False), ("homelab.example", False),
])
def test_which_listen_addresses_are_loopback(host, loopback):
    assert server.is_loopback(host) is loopback


def test_a_loopback_server_runs_without_auth(home):
    env = server.server_env("127.0.0.1", {"PREFECT_API_URL": "http://x/api", "PATH": "/bin"})
    assert server.SERVER_AUTH_ENV not in env
    assert "PREFECT_API_URL" not in env and env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert not server.auth_file().exists()


def test_beyond_loopback_an_auth_string_is_generated_once_and_kept_private(home):
    first = server.server_env("0.0.0.0", {})[server.SERVER_AUTH_ENV]
    user, _, password = first.partition(":")
    assert user == "homelab" and len(password) >= 24
    assert stat.S_IMODE(server.auth_file().stat().st_mode) == 0o600
    assert server.server_env("10.203.0.1", {})[server.SERVER_AUTH_ENV] == first


def test_the_operators_auth_string_wins(home):
    env = server.server_env("0.0.0.0", {server.SERVER_AUTH_ENV: "ops:long-password-here"})
    assert env[server.SERVER_AUTH_ENV] == "ops:long-password-here"
    assert not server.auth_file().exists()


@pytest.mark.parametrize(("host", "url"), [
    ("127.0.0.1", "http://127.0.0.1:4200/api"), ("0.0.0.0", "http://127.0.0.1:4200/api"),
    ("10.203.0.1", "http://10.203.0.1:4200/api"), ("::1", "http://[::1]:4200/api"),
])
def test_the_api_url_this_machine_reaches(host, url):
    assert server.api_url_for(host, 4200) == url


def test_a_postgresql_database_goes_to_the_server_only():
    url = "postgresql+asyncpg://prefect:s3cret@127.0.0.1:5432/prefect"
    env = server.server_env("127.0.0.1", {"PATH": "/bin"}, database=url)
    assert env[server.DATABASE_ENV] == url
    assert server.DATABASE_ENV not in server.server_env("127.0.0.1", {"PATH": "/bin"})


@pytest.mark.parametrize("url", ["mysql://root:s3cret@db/prefect", "postgresql://prefect:s3cret@db/p", "s3cret"])
def test_a_database_url_of_another_kind_is_refused_without_its_password(url):
    with pytest.raises(ServerError, match="must start with postgresql\\+asyncpg://") as caught:
        server.server_env("127.0.0.1", {}, database=url)
    assert "s3cret" not in str(caught.value)

"""Secrets without Vault: env-file rendering and quoting, the remote hash script, settings, reprs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from model.env_files import RenderedEnvFile
from model.masking import SecretMasker
from tasks.engine import transport as remote
from tasks.host_commands.file_hashes import hash_remote_files, parse_remote_hashes
from tasks.integrations.vault import client as secrets_module
from tasks.integrations.vault.client import VaultReader
from tasks.integrations.vault.envfile import random_secret, render_env_files, unsafe_reason
from tasks.integrations.vault.errors import SecretsError
from tasks.integrations.vault.settings import VaultSettings, settings_from_env

CANARY = "S3CR3T-canary"


@dataclass(frozen=True)
class SecretRef:
    """A stack's ``secrets:`` entry as the renderer reads it (without the inventory's validation,
    so the renderer's own checks are reached)."""

    path: str
    keys: tuple[str, ...]
    env_file: str = ".env.secrets"

PG = "homelab/postgres"
APP = "homelab/app"

# Values that must come back from a compose env file exactly as they went in.
VERBATIM = [
    ("dollar and braces", "a$b ${HOME} $$ $(id) `id`"),
    ("hash", "#not-a-comment # nor this"),
    ("spaces kept", "  leading and trailing  "),
    ("empty", ""),
    ("double quotes", 'say "hi"'),
    ("backslashes inside", "a\\b\\\\c \\n \\t \\x41 \\101"),
    ("equals", "=a=b="),
    ("tab", "tab\there"),
    ("unicode", "ünï € 🙂"),
    ("export word", "export FOO=bar"),
    ("url", "postgres://u:p@db:5432/x?sslmode=require&a=b"),
    ("random", random_secret()),
]

UNSAFE = [
    ("newline", f"{CANARY}-a\nb", "line break"),
    ("carriage return", f"{CANARY}-a\rb", "line break"),
    ("NUL", f"{CANARY}-a\x00b", "NUL"),
    ("escape char", f"{CANARY}-a\x1b[0m", "control character"),
    ("DEL", f"{CANARY}-a\x7f", "control character"),
    ("single quote", f"{CANARY}-it's", "single quote"),
    ("trailing backslash", f"{CANARY}-a\\", "ends with a backslash"),
    ("lone surrogate", f"{CANARY}-\udc80", "UTF-8"),
]


def _values(**paths: dict[str, str]) -> dict[str, tuple[dict[str, str], int]]:
    return {path.replace("__", "/"): (data, 3) for path, data in paths.items()}


# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------


def test_render_groups_by_env_file_with_sorted_keys_and_versions():
    refs = [
        SecretRef(PG, ("POSTGRES_USER", "POSTGRES_PASSWORD")),
        SecretRef(APP, ("SECRET_KEY",)),
        SecretRef(APP, ("SMTP_PASSWORD",), env_file=".env.mail"),
    ]
    values = {
        PG: ({"POSTGRES_PASSWORD": "pw-1", "POSTGRES_USER": "app", "UNUSED": "x"}, 4),
        APP: ({"SECRET_KEY": "k$y", "SMTP_PASSWORD": "m a i l"}, 2),
    }
    files = render_env_files(refs, values)

    assert list(files) == [".env.secrets", ".env.mail"]
    secrets_file = files[".env.secrets"]
    assert secrets_file.name == ".env.secrets"
    assert secrets_file.content == b"POSTGRES_PASSWORD='pw-1'\nPOSTGRES_USER='app'\nSECRET_KEY='k$y'\n"
    assert secrets_file.versions == {APP: 2, PG: 4}
    assert secrets_file.sha256 == hashlib.sha256(secrets_file.content).hexdigest()
    mail = files[".env.mail"]
    assert mail.content == b"SMTP_PASSWORD='m a i l'\n"
    assert mail.versions == {APP: 2}
    assert mail.sha256 == hashlib.sha256(b"SMTP_PASSWORD='m a i l'\n").hexdigest()


def test_render_is_deterministic_and_only_versions_of_used_paths():
    refs = [SecretRef(APP, ("B", "A"))]
    one = render_env_files(refs, {APP: ({"A": "1", "B": "2"}, 7), PG: ({"X": "y"}, 1)})
    two = render_env_files(list(reversed(refs)), {PG: ({"X": "y"}, 1), APP: ({"B": "2", "A": "1"}, 7)})
    assert one == two
    assert one[".env.secrets"].content == b"A='1'\nB='2'\n"
    assert one[".env.secrets"].versions == {APP: 7}


def test_same_path_and_key_twice_is_rendered_once():
    refs = [SecretRef(APP, ("A",)), SecretRef(APP, ("A", "B"))]
    files = render_env_files(refs, {APP: ({"A": "1", "B": "2"}, 1)})
    assert files[".env.secrets"].content == b"A='1'\nB='2'\n"


def test_no_refs_renders_nothing():
    assert render_env_files([], {}) == {}


@pytest.mark.parametrize("value", [v for _, v in VERBATIM], ids=[name for name, _ in VERBATIM])
def test_safe_values_are_single_quoted_verbatim(value):
    files = render_env_files([SecretRef(APP, ("K",))], {APP: ({"K": value}, 1)})
    assert files[".env.secrets"].content == f"K='{value}'\n".encode()
    assert unsafe_reason(value) is None


@pytest.mark.parametrize(("value", "reason"), [c[1:] for c in UNSAFE], ids=[c[0] for c in UNSAFE])
def test_unsafe_values_are_refused_naming_path_and_key_never_the_value(value, reason):
    with pytest.raises(SecretsError) as caught:
        render_env_files([SecretRef(PG, ("POSTGRES_PASSWORD",))], {PG: ({"POSTGRES_PASSWORD": value}, 5)})
    exc = caught.value
    text = str(exc)
    assert f"secret {PG} (version 5) key POSTGRES_PASSWORD" in text
    assert reason in text
    assert "random_secret" in text
    assert (exc.path, exc.key, exc.exit_code) == (PG, "POSTGRES_PASSWORD", 6)
    for shown in (text, repr(exc), str(exc.args)):
        assert CANARY not in shown


@pytest.mark.parametrize(
    ("refs", "values", "expected"),
    [
        ([SecretRef(PG, ("POSTGRES_PASSWORD",))], {PG: ({"OTHER": "x", "USER": "y"}, 2)},
         f"secret {PG} (version 2) key POSTGRES_PASSWORD is missing (the secret has keys OTHER, USER)"),
        ([SecretRef(PG, ("A",))], {PG: ({}, 2)}, "(the secret has no keys)"),
        ([SecretRef(PG, ("A",))], {}, f"secret {PG} was not read from Vault"),
        ([SecretRef(PG, ("BAD-NAME",))], {PG: ({"BAD-NAME": "x"}, 1)}, "'BAD-NAME' is not an environment variable"),
        ([SecretRef(PG, ("A",)), SecretRef(APP, ("A",))], {PG: ({"A": "1"}, 1), APP: ({"A": "2"}, 1)},
         f".env.secrets already gets A from secret {PG}"),
        ([SecretRef(PG, ("A",), env_file="../.env")], {PG: ({"A": "1"}, 1)}, "must be a plain file name"),
        ([SecretRef(PG, ("A",))], {PG: ({"A": 5}, 1)}, "it is a int, not a string"),
    ],
    ids=["missing key", "empty secret", "path not read", "bad key name", "key from two paths", "env_file path",
         "not a string"],
)
def test_render_errors(refs, values, expected):
    with pytest.raises(SecretsError, match=re.escape(expected)):
        render_env_files(refs, values)


def test_refs_may_be_any_object_with_path_keys_env_file():
    """The inventory's StackSecret (keys as a list) works as it is."""

    class Entry:
        path = APP
        keys = ["A"]  # noqa: RUF012 - a stand-in for a pydantic model
        env_file = ".env.app"

    files = render_env_files([Entry()], {APP: ({"A": "1"}, 1)})  # type: ignore[list-item]
    assert files[".env.app"].content == b"A='1'\n"


# ---------------------------------------------------------------------------------------------
# the quoting rule against compose's parser
# ---------------------------------------------------------------------------------------------


def compose_go_single_quoted(line: str, *, v1: bool) -> tuple[str, str]:
    """The single-quote branch of compose-go's dotenv parser, for one ``KEY='...'`` line.

    v2 (docker-compose 2.24+, incl. 2.26.1 on the lab hosts): ``\\'`` gives ``'``, and any other
    backslash is kept. v1: the raw text up to the first quote that has no backslash in front, so
    ``\\'`` stays as it is.
    """
    key, _, rest = line.partition("=")
    assert rest.startswith("'")
    chars: list[str] = []
    escape = False
    for i in range(1, len(rest)):
        char = rest[i]
        if v1:
            if char == "'" and rest[i - 1] != "\\":
                return key, rest[1:i]
            continue
        if char != "'":
            if not escape and char == "\\":
                escape = True
                continue
            if escape:
                escape = False
                chars.append("\\")
            chars.append(char)
            continue
        if escape:
            escape = False
            chars.append(char)
            continue
        return key, "".join(chars)
    raise ValueError("unterminated quoted value")


@pytest.mark.parametrize("v1", [False, True], ids=["compose-go v2", "compose-go v1"])
def test_rendered_lines_parse_back_verbatim_with_both_compose_go_parsers(v1):
    values = {f"K{i}": value for i, (_, value) in enumerate(VERBATIM)}
    content = render_env_files([SecretRef(APP, tuple(values))], {APP: (values, 1)})[".env.secrets"].content
    parsed = dict(compose_go_single_quoted(line, v1=v1) for line in content.decode().splitlines())
    assert parsed == values


def test_refused_values_are_exactly_those_the_parsers_would_change():
    """A quote or a trailing backslash is read differently (or not at all) by compose-go."""
    for value in ("it's", "a\\"):
        line = f"K='{value}'"
        outcomes = set()
        for v1 in (False, True):
            try:
                outcomes.add(compose_go_single_quoted(line, v1=v1)[1])
            except ValueError:
                outcomes.add(None)
        assert outcomes != {value}


def _docker_compose() -> list[str] | None:
    if not shutil.which("docker"):
        return None
    try:
        done = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return ["docker", "compose"] if done.returncode == 0 else None


@pytest.mark.skipif(_docker_compose() is None, reason="docker compose v2 is not installed")
def test_docker_compose_config_reads_rendered_env_file_back_verbatim(tmp_path: Path):
    """``docker compose config`` parses env_file without an engine: the real parser the hosts run."""
    values = {f"K{i}": value for i, (_, value) in enumerate(VERBATIM)}
    files = render_env_files([SecretRef(APP, tuple(values))], {APP: (values, 1)})
    (tmp_path / ".env.secrets").write_bytes(files[".env.secrets"].content)
    (tmp_path / "compose.yaml").write_text("services:\n  app:\n    image: busybox\n    env_file: [.env.secrets]\n")
    env = {k: v for k, v in os.environ.items() if k not in values and not k.startswith("COMPOSE_")}
    env["DOCKER_CONFIG"] = str(tmp_path / "docker-config")
    done = subprocess.run(["docker", "compose", "-f", "compose.yaml", "config", "--format", "json"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    environment = json.loads(done.stdout)["services"]["app"]["environment"]
    # `config` writes a compose file, where a literal $ is written $$.
    assert {k: v.replace("$$", "$") for k, v in environment.items()} == values


# ---------------------------------------------------------------------------------------------
# remote hashes
# ---------------------------------------------------------------------------------------------


def test_hash_remote_files_argv():
    argv = hash_remote_files([".homelab/stacks/db/.env.secrets", "/srv/a b/.env.mail"])
    assert argv[:2] == ["sh", "-c"]  # the script itself runs in a real sh below
    assert argv[3:] == ["hash-files", ".homelab/stacks/db/.env.secrets", "/srv/a b/.env.mail"]
    assert hash_remote_files([])[3:] == ["hash-files"]


@pytest.mark.parametrize("bad", ["", "a\nb"], ids=["empty", "newline"])
def test_hash_remote_files_refuses_unparseable_paths(bad):
    with pytest.raises(ValueError, match="empty or contains a newline"):
        hash_remote_files(["ok", bad])


def test_hash_script_runs_locally(tmp_path: Path):
    spaced = tmp_path / "dir with spaces" / ".env.secrets"
    spaced.parent.mkdir()
    spaced.write_bytes(b"A='1'\n")
    plain = tmp_path / "-dash.env"
    plain.write_bytes(b"")
    missing = tmp_path / "nope" / ".env"
    a_dir = tmp_path / "dir with spaces"
    paths = [str(spaced), str(plain), str(missing), str(a_dir)]

    done = subprocess.run(hash_remote_files(paths), capture_output=True, text=True, timeout=10, check=True)

    one = hashlib.sha256(b"A='1'\n").hexdigest()
    assert done.stdout == (f"{one}  {spaced}\n"
                           f"{hashlib.sha256(b'').hexdigest()}  {plain}\n"
                           f"MISSING {missing}\n"
                           f"MISSING {a_dir}\n")
    assert parse_remote_hashes(done.stdout) == {
        str(spaced): one,
        str(plain): hashlib.sha256(b"").hexdigest(),
        str(missing): None,
        str(a_dir): None,
    }


def test_hash_matches_rendered_sha256(tmp_path: Path):
    rendered = render_env_files([SecretRef(APP, ("A",))], {APP: ({"A": "x y"}, 1)})[".env.secrets"]
    target = tmp_path / ".env.secrets"
    target.write_bytes(rendered.content)
    done = subprocess.run(hash_remote_files([str(target)]), capture_output=True, text=True, timeout=10, check=True)
    assert parse_remote_hashes(done.stdout) == {str(target): rendered.sha256}


def test_hash_script_fails_when_a_file_cannot_be_read(tmp_path: Path, fake_bin):
    """An unreadable file is an error (exit status non-zero), not a hash and not MISSING."""
    env = fake_bin("sha256sum", "echo 'sha256sum: -: Permission denied' >&2; exit 1")
    target = tmp_path / ".env.secrets"
    target.write_bytes(b"A='1'\n")
    done = subprocess.run(hash_remote_files([str(target), str(tmp_path / "later")]), capture_output=True, text=True,
                          timeout=10, env=env)
    assert done.returncode == 1
    assert done.stdout == ""
    assert "Permission denied" in done.stderr


H = "a" * 64
PARSE = [
    ("empty", "", {}),
    ("hash and missing", f"{H}  s/db/.env.secrets\nMISSING s/db/.env.mail\n",
     {"s/db/.env.secrets": H, "s/db/.env.mail": None}),
    ("path with spaces", f"{H}  /srv/a b/.env\n", {"/srv/a b/.env": H}),
    ("crlf", f"{H}  x\r\nMISSING y\r\n", {"x": H, "y": None}),
    ("garbled lines skipped", f"sha256sum: x: Permission denied\n{H[:-1]}  short\n{H.upper()}  upper\n"
                              f"{H} one-space\nMISSING \n{H}  ok\n", {"ok": H}),
    ("no trailing newline", "MISSING a", {"a": None}),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in PARSE], ids=[c[0] for c in PARSE])
def test_parse_remote_hashes(text, expected):
    assert parse_remote_hashes(text) == expected


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------

ADDR = "https://vault.lan:8200"
SETTINGS = [
    ("unset", {}, None),
    ("empty addr", {"VAULT_ADDR": "  ", "VAULT_TOKEN": "t"}, None),
    ("approle", {"VAULT_ADDR": ADDR, "VAULT_ROLE_ID": "rid", "VAULT_SECRET_ID": "sid", "VAULT_CACERT": "/ca.pem"},
     VaultSettings(ADDR, ca_cert="/ca.pem", role_id="rid", secret_id="sid")),
    ("token", {"VAULT_ADDR": ADDR, "VAULT_TOKEN": "tok", "VAULT_KV_MOUNT": "/kv/"},
     VaultSettings(ADDR, token="tok", mount="kv")),
    ("approle wins over token", {"VAULT_ADDR": ADDR, "VAULT_ROLE_ID": "rid", "VAULT_SECRET_ID": "sid",
                                 "VAULT_TOKEN": "tok"}, VaultSettings(ADDR, role_id="rid", secret_id="sid")),
    ("empty optional vars", {"VAULT_ADDR": ADDR, "VAULT_TOKEN": "tok", "VAULT_CACERT": "", "VAULT_KV_MOUNT": ""},
     VaultSettings(ADDR, token="tok")),
]


@pytest.mark.parametrize(("env", "expected"), [c[1:] for c in SETTINGS], ids=[c[0] for c in SETTINGS])
def test_settings_from_env(env, expected):
    assert settings_from_env(env) == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"VAULT_ADDR": ADDR}, "there are no credentials: set VAULT_ROLE_ID and VAULT_SECRET_ID"),
        ({"VAULT_ADDR": ADDR, "VAULT_ROLE_ID": "rid"}, "VAULT_ROLE_ID is set but VAULT_SECRET_ID is not"),
        ({"VAULT_ADDR": ADDR, "VAULT_SECRET_ID": f"{CANARY}-sid", "VAULT_TOKEN": "t"},
         "VAULT_SECRET_ID is set but VAULT_ROLE_ID is not"),
    ],
    ids=["no credentials", "role without secret", "secret without role"],
)
def test_settings_from_env_errors(env, expected):
    with pytest.raises(SecretsError, match=re.escape(expected)) as caught:
        settings_from_env(env)
    assert CANARY not in str(caught.value)
    assert caught.value.exit_code == 6


def test_settings_default_to_process_environment(monkeypatch):
    monkeypatch.delenv("VAULT_ADDR", raising=False)
    assert settings_from_env() is None


# ---------------------------------------------------------------------------------------------
# nothing secret in a repr
# ---------------------------------------------------------------------------------------------


def test_reprs_hide_secrets(monkeypatch):
    monkeypatch.setattr(secrets_module, "MASKER", SecretMasker())
    settings = VaultSettings(ADDR, role_id="rid", secret_id=f"{CANARY}-sid", token=f"{CANARY}-tok")
    rendered = render_env_files([SecretRef(APP, ("A",))], {APP: ({"A": f"{CANARY}-value"}, 1)})[".env.secrets"]
    reader = VaultReader(settings)
    for shown in (repr(settings), str(settings), repr(rendered), repr({"x": rendered}), repr(reader)):
        assert CANARY not in shown
    assert "rid" in repr(settings)
    assert repr(reader) == f"VaultReader(addr='{ADDR}', mount='secret', auth='approle')"
    assert isinstance(rendered, RenderedEnvFile)


def test_values_are_registered_with_the_process_wide_masker():
    assert secrets_module.MASKER is remote.MASKER


def test_reader_registers_its_credentials_with_the_masker(monkeypatch):
    masker = SecretMasker()
    monkeypatch.setattr(secrets_module, "MASKER", masker)
    VaultReader(VaultSettings(ADDR, role_id="rid", secret_id=f"{CANARY}-sid", token=f"{CANARY}-tok"))
    assert masker.mask(f"x {CANARY}-sid {CANARY}-tok") == "x *** ***"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (VaultSettings("vault.lan:8200", token="t"), "is not http(s)://host[:port]"),
        (VaultSettings("ftp://vault.lan", token="t"), "is not http(s)://host[:port]"),
        (VaultSettings("https://vault.lan:99999", token="t"), "is not http(s)://host[:port]"),
        (VaultSettings(ADDR, ca_cert="/nonexistent/ca.pem", token="t"), "Vault CA file /nonexistent/ca.pem does not"),
    ],
    ids=["no scheme", "ftp", "bad port", "missing CA file"],
)
def test_reader_refuses_bad_settings_before_any_request(settings, expected):
    with pytest.raises(SecretsError, match=re.escape(expected)):
        VaultReader(settings)


def test_vault_block_builds_settings():
    from blocks.vault import VaultAccess

    block = VaultAccess(addr=f" {ADDR} ", ca_cert="", role_id="rid", secret_id=f"{CANARY}-sid", mount="/kv/")
    assert block.settings() == VaultSettings(ADDR, role_id="rid", secret_id=f"{CANARY}-sid", mount="kv")
    assert CANARY not in repr(block)
    assert VaultAccess._block_type_name == "Homelab Vault Access"
    assert VaultAccess(addr=ADDR, token="dev").settings() == VaultSettings(ADDR, token="dev")


# ---------------------------------------------------------------------------------------------
# random secrets
# ---------------------------------------------------------------------------------------------


def test_random_secret():
    made = {random_secret() for _ in range(50)}
    assert len(made) == 50
    for value in made:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", value)
        assert unsafe_reason(value) is None
    assert len(random_secret(48)) == 64


def test_random_secret_refuses_weak_sizes():
    with pytest.raises(ValueError, match="too weak"):
        random_secret(8)


# ---------------------------------------------------------------------------------------------
# secrets too short to be masked are refused, naming path and key, never the value
# ---------------------------------------------------------------------------------------------


def _reader_answering(monkeypatch, data: dict) -> tuple[VaultReader, SecretMasker]:
    masker = SecretMasker()
    monkeypatch.setattr(secrets_module, "MASKER", masker)
    reader = VaultReader(VaultSettings(ADDR, token=f"{CANARY}-tok"))
    answer = {"data": {"data": data, "metadata": {"version": 3}}}
    monkeypatch.setattr(reader, "_authed", lambda op, send: answer)
    return reader, masker


@pytest.mark.parametrize("short", ["Qz", "pw12345", 1234567, True])
def test_a_value_shorter_than_8_characters_is_refused(monkeypatch, short):
    reader, _ = _reader_answering(monkeypatch, {"LONG_ENOUGH": f"{CANARY}-ok", "PIN": short})
    with pytest.raises(SecretsError) as caught:
        reader.read(PG)
    exc = caught.value
    assert (exc.exit_code, exc.path, exc.key) == (6, PG, "PIN")
    assert f"read secret/{PG} failed: the value of key PIN is shorter than 8 characters" in str(exc)
    assert "next: make it at least 8 characters long" in str(exc)
    assert json.dumps(short).strip("\"") not in str(exc).replace(PG, "")
    assert reader._cache == {}  # nothing of it is kept


@pytest.mark.parametrize("value", ["", "12345678", f"{CANARY}-ok"], ids=["empty", "8 characters", "long"])
def test_empty_and_long_enough_values_are_read_and_masked(monkeypatch, value):
    reader, masker = _reader_answering(monkeypatch, {"K": value})
    assert reader.read(PG) == ({"K": value}, 3)
    if value:
        assert masker.mask(f"x {value} y") == "x *** y"


def test_writing_a_short_value_is_refused_before_sending(monkeypatch):
    reader, _ = _reader_answering(monkeypatch, {})
    monkeypatch.setattr(reader, "_authed", lambda op, send: pytest.fail("sent"))
    with pytest.raises(SecretsError, match="the value of key PIN is shorter than 8 characters") as caught:
        reader.write_cas(PG, {"PIN": "1234", "OTHER": f"{CANARY}-long"}, cas=1)
    assert "1234" not in str(caught.value)

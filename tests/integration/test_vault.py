"""VaultReader against a real OpenBao dev server (API-compatible with Vault).

The shared session server (``openbao``) serves the read-only and write tests. Each test uses
paths of its own. Tests that seal or stop a server get a fresh one (``openbao_disposable``).
Every secret value is a recognisable canary. An autouse fixture checks that no canary, secret_id
or token appears in any log record at DEBUG, and ``assert_clean`` checks each SecretsError.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from model.inventory import StackSecret
from model.masking import SecretMasker
from tasks.integrations.vault import client as secrets_module
from tasks.integrations.vault.client import VaultReader
from tasks.integrations.vault.envfile import render_env_files
from tasks.integrations.vault.errors import SecretsError
from tasks.integrations.vault.settings import VaultSettings

if TYPE_CHECKING:
    from tests.openbao import OpenBaoServer


CANARY = "S3CR3T-canary"
SENSITIVE: list[str] = [CANARY]  # grows with every secret_id and token made here


def canary(tag: str = "") -> str:
    return f"{CANARY}-{tag}-{secrets.token_hex(4)}"


def sensitive(*values: str) -> None:
    SENSITIVE.extend(values)


@pytest.fixture(autouse=True)
def masker(monkeypatch: pytest.MonkeyPatch) -> SecretMasker:
    """A private masker per test: the values registered here ("app", "5432", ...) must not mask
    the output of other tests through the process-wide MASKER."""
    private = SecretMasker()
    monkeypatch.setattr(secrets_module, "MASKER", private)
    return private


@pytest.fixture(autouse=True)
def _no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    text = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    for value in SENSITIVE:
        assert value not in text


def assert_clean(exc: SecretsError) -> None:
    """No canary, secret_id or token in the message, repr, args or attributes of the error."""
    shown = [str(exc), repr(exc), str(exc.args), str(vars(exc))]
    for value in SENSITIVE:
        for text in shown:
            assert value not in text
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__  # hvac's exception is not shown in a traceback
    assert exc.exit_code == 6


def failure(call, *args) -> SecretsError:
    with pytest.raises(SecretsError) as caught:
        call(*args)
    assert_clean(caught.value)
    return caught.value


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A KV prefix of this test's own on the shared server."""
    return f"t/{request.node.name.replace('[', '-').replace(']', '')}-{secrets.token_hex(3)}"


def approle_reader(server: OpenBaoServer, paths: list[str], capabilities=("read",), **kw) -> VaultReader:
    role_id, secret_id = server.approle(paths, capabilities=capabilities)
    sensitive(secret_id)
    return VaultReader(VaultSettings(server.addr, ca_cert=server.ca_cert, role_id=role_id, secret_id=secret_id,
                                     **kw))


# ---------------------------------------------------------------------------------------------
# reads
# ---------------------------------------------------------------------------------------------


def test_approle_login_and_read_latest_version(openbao: OpenBaoServer, prefix: str, masker: SecretMasker):
    path = f"{prefix}/postgres"
    first, second = canary("pw1"), canary("pw2")
    openbao.put(path, {"POSTGRES_PASSWORD": first, "POSTGRES_USER": "app-user"})
    openbao.put(path, {"POSTGRES_PASSWORD": second, "POSTGRES_USER": "app-user", "OPTIONS": {"port": 5432}})
    reader = approle_reader(openbao, [f"{prefix}/*"])

    reader.login()
    data, version = reader.read(path)

    assert version == 2
    assert data == {"POSTGRES_PASSWORD": second, "POSTGRES_USER": "app-user", "OPTIONS": '{"port":5432}'}
    assert masker.mask(f"psql password={second} user=app-user options={data['OPTIONS']}") == \
        "psql password=*** user=*** options=***"


def test_read_logs_in_by_itself_and_renders(openbao: OpenBaoServer, prefix: str):
    openbao.put(f"{prefix}/db", {"PASSWORD": canary("db")})
    openbao.put(f"{prefix}/app", {"KEY": canary("app")})
    reader = approle_reader(openbao, [f"{prefix}/db", f"{prefix}/app"])
    refs = [StackSecret(path=f"{prefix}/db", keys=["PASSWORD"]), StackSecret(path=f"{prefix}/app", keys=["KEY"])]

    files = render_env_files(refs, {ref.path: reader.read(ref.path) for ref in refs})

    assert files[".env.secrets"].versions == {f"{prefix}/app": 1, f"{prefix}/db": 1}
    assert files[".env.secrets"].content.startswith(b"KEY='S3CR3T-canary-app-")


def test_each_path_is_read_once_per_reader(openbao: OpenBaoServer, prefix: str):
    path = f"{prefix}/cached"
    old, new = canary("old"), canary("new")
    openbao.put(path, {"V": old})
    reader = approle_reader(openbao, [path])
    assert reader.read(path) == ({"V": old}, 1)

    openbao.put(path, {"V": new})  # rotated by someone else during the run

    assert reader.read(path) == ({"V": old}, 1)  # served from the cache, not the server
    assert reader.read(f"/{path}/") == ({"V": old}, 1)  # the same path, spelled differently
    data, _ = reader.read(path)
    data["V"] = "changed by the caller"
    assert reader.read(path) == ({"V": old}, 1)  # callers get copies
    assert approle_reader(openbao, [path]).read(path) == ({"V": new}, 2)  # the next run sees the rotation


def test_path_not_found(openbao: OpenBaoServer, prefix: str):
    reader = approle_reader(openbao, [f"{prefix}/*"])
    exc = failure(reader.read, f"{prefix}/nope")
    assert f"read secret/{prefix}/nope failed: no such secret (HTTP 404)" in str(exc)
    assert "bao kv put -mount=secret" in str(exc)
    assert exc.http_status == 404


def test_deleted_latest_version(openbao: OpenBaoServer, prefix: str):
    path = f"{prefix}/deleted"
    openbao.put(path, {"V": canary()})
    openbao.client().secrets.kv.v2.delete_latest_version_of_secret(path)
    exc = failure(approle_reader(openbao, [path]).read, path)
    assert "the latest version was deleted (HTTP 404)" in str(exc)
    assert "undelete" in str(exc)


def test_denied_path_with_least_privilege_policy(openbao: OpenBaoServer, prefix: str):
    allowed, denied = f"{prefix}/allowed", f"{prefix}/denied"
    openbao.put(allowed, {"V": canary("ok")})
    openbao.put(denied, {"V": canary("no")})
    reader = approle_reader(openbao, [allowed])
    reader.read(allowed)

    exc = failure(reader.read, denied)

    assert f"read secret/{denied} failed: permission denied (HTTP 403)" in str(exc)
    assert f"read on secret/data/{denied}" in str(exc)
    assert (exc.path, exc.http_status) == (denied, 403)


def test_wrong_secret_id(openbao: OpenBaoServer, prefix: str):
    role_id, _ = openbao.approle([f"{prefix}/*"])
    wrong = canary("secret-id")
    reader = VaultReader(VaultSettings(openbao.addr, role_id=role_id, secret_id=wrong))

    for call in (reader.login, lambda: reader.read(f"{prefix}/x")):
        exc = failure(call)
        assert "AppRole login (role_id" in str(exc)
        assert "invalid role_id or secret_id" in str(exc)
        assert "VAULT_SECRET_ID" in str(exc)
        assert wrong not in str(exc)
        assert role_id not in str(exc)  # only its first characters


def test_token_login_for_development(openbao: OpenBaoServer, prefix: str):
    path = f"{prefix}/dev"
    openbao.put(path, {"V": "dev-value-1"})
    assert VaultReader(VaultSettings(openbao.addr, token=openbao.root_token)).read(path) == ({"V": "dev-value-1"}, 1)

    bad = canary("token")
    exc = failure(VaultReader(VaultSettings(openbao.addr, token=bad)).read, path)
    assert "the token was refused (HTTP 403)" in str(exc)
    assert bad not in str(exc)


def test_never_falls_back_to_ambient_token(openbao: OpenBaoServer, prefix: str, tmp_path, monkeypatch):
    """~/.vault-token and VAULT_TOKEN hold the root token; a reader without credentials must not use it."""
    path = f"{prefix}/ambient"
    openbao.put(path, {"V": canary()})
    (tmp_path / ".vault-token").write_text(openbao.root_token)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("VAULT_TOKEN", openbao.root_token)

    exc = failure(VaultReader(VaultSettings(openbao.addr)).read, path)
    assert "no credentials" in str(exc)

    reader = approle_reader(openbao, [f"{prefix}/other"])
    exc = failure(reader.read, path)  # the AppRole's token, not root: denied
    assert exc.http_status == 403


def test_wrong_mount(openbao: OpenBaoServer, prefix: str):
    reader = approle_reader(openbao, [f"{prefix}/*"], mount="kv")
    exc = failure(reader.read, f"{prefix}/x")
    assert f"read kv/{prefix}/x failed: permission denied" in str(exc)
    assert "VAULT_KV_MOUNT" in str(exc)


# ---------------------------------------------------------------------------------------------
# writes and history
# ---------------------------------------------------------------------------------------------


def test_write_cas_and_mismatch(openbao: OpenBaoServer, prefix: str, masker: SecretMasker):
    path = f"{prefix}/rotate"
    first, second, third = canary("v1"), canary("v2"), canary("v3")
    reader = approle_reader(openbao, [path], capabilities=("create", "read", "update"))

    assert reader.write_cas(path, {"PASSWORD": first}, cas=0) == 1
    assert masker.mask(first) == "***"
    assert reader.write_cas(path, {"PASSWORD": second}, cas=1) == 2
    assert reader.read(path) == ({"PASSWORD": second}, 2)  # the cache follows our own writes
    assert openbao.get(path) == ({"PASSWORD": second}, 2)

    exc = failure(reader.write_cas, path, {"PASSWORD": third}, 1)
    assert f"write (cas 1) secret/{path} failed: check-and-set failed: version 1 is not the current version" in str(exc)
    assert "read it again" in str(exc)
    assert exc.http_status == 400
    exc = failure(reader.write_cas, path, {"PASSWORD": third}, 0)  # 0: only if it does not exist
    assert "check-and-set failed: the secret exists already" in str(exc)
    assert openbao.get(path) == ({"PASSWORD": second}, 2)


def test_write_cas_masks_the_new_value_and_refuses_a_negative_version(openbao: OpenBaoServer, prefix: str,
                                                                      masker: SecretMasker):
    path = f"{prefix}/history"
    old, new = canary("old"), canary("new")
    openbao.put(path, {"PASSWORD": old})
    reader = approle_reader(openbao, [path], capabilities=("create", "read", "update"))
    _, version = reader.read(path)

    assert reader.write_cas(path, {"PASSWORD": new}, cas=version) == 2

    assert openbao.get(path) == ({"PASSWORD": new}, 2)
    assert masker.mask(f"{old} {new}") == "*** ***"
    assert "is not a check-and-set version" in str(failure(reader.write_cas, path, {"PASSWORD": new}, -1))


def test_write_denied_without_update(openbao: OpenBaoServer, prefix: str):
    path = f"{prefix}/ro"
    openbao.put(path, {"V": canary()})
    reader = approle_reader(openbao, [path])
    exc = failure(reader.write_cas, path, {"V": canary("new")}, 1)
    assert "permission denied (HTTP 403)" in str(exc)
    assert f"create and update on secret/data/{path}" in str(exc)


def test_write_refuses_non_string_values(openbao: OpenBaoServer, prefix: str):
    reader = approle_reader(openbao, [f"{prefix}/x"], capabilities=("create", "update"))
    exc = failure(reader.write_cas, f"{prefix}/x", {"PORT": 5432}, 0)
    assert "key 'PORT' does not map to a string" in str(exc)


# ---------------------------------------------------------------------------------------------
# a server that goes away mid-run
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["seal", "stop"])
def test_server_lost_mid_run(openbao_disposable: OpenBaoServer, fault: str):
    server = openbao_disposable
    server.put("app/a", {"V": canary("a")})
    server.put("app/b", {"V": canary("b")})
    reader = approle_reader(server, ["app/*"])
    data, _ = reader.read("app/a")

    getattr(server, fault)()

    assert reader.read("app/a") == (data, 1)  # cached: no request reaches the (dead) server
    exc = failure(reader.read, "app/b")
    assert f"vault {server.addr}: read secret/app/b failed:" in str(exc)
    if fault == "seal":
        assert "Vault is sealed" in str(exc)
        assert "operator unseal" in str(exc)
        assert exc.http_status == 503
        server.unseal()
        assert reader.read("app/b")[1] == 1
    else:
        assert "cannot reach Vault: connection refused" in str(exc)
        assert "check that Vault runs and listens at" in str(exc)


def test_sealed_before_login(openbao_disposable: OpenBaoServer):
    reader = approle_reader(openbao_disposable, ["app/*"])
    openbao_disposable.seal()
    exc = failure(reader.login)
    assert "AppRole login" in str(exc)
    assert "Vault is sealed" in str(exc)


def test_approle_auth_not_enabled(openbao_disposable: OpenBaoServer):
    reader = VaultReader(VaultSettings(openbao_disposable.addr, role_id="rid", secret_id=canary("sid")))
    exc = failure(reader.login)
    assert "the login path auth/approle/login was refused (HTTP 403)" in str(exc)
    assert "no AppRole auth method at auth/approle/" in str(exc)


def test_nothing_listening():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exc = failure(VaultReader(VaultSettings(f"http://127.0.0.1:{port}", token=canary("t"))).read, "app/x")
    assert "cannot reach Vault: connection refused" in str(exc)


def test_no_answer_times_out():
    """A listener that accepts and never answers: the request gives up after timeout_s."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        addr = f"http://127.0.0.1:{listener.getsockname()[1]}"
        exc = failure(VaultReader(VaultSettings(addr, token=canary("t"), timeout_s=0.3)).login)
        assert "Vault did not answer within 0.3s" in str(exc)
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


# ---------------------------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------------------------


def test_tls_is_verified(openbao_factory: Callable[..., OpenBaoServer], openbao: OpenBaoServer):
    server = openbao_factory(tls=True)
    assert server.addr.startswith("https://127.0.0.1:")
    server.put("app/tls", {"V": "tls-verified"})
    role_id, secret_id = server.approle(["app/tls"])
    sensitive(secret_id)
    verified = VaultReader(VaultSettings(server.addr, ca_cert=server.ca_cert, role_id=role_id, secret_id=secret_id))
    assert verified.read("app/tls") == ({"V": "tls-verified"}, 1)

    exc = failure(VaultReader(VaultSettings(server.addr, role_id=role_id, secret_id=secret_id)).login)
    assert f"TLS verification of {server.addr} failed" in str(exc)
    assert "set VAULT_CACERT" in str(exc)

    plain = server.addr.replace("https://", "http://")
    exc = failure(VaultReader(VaultSettings(plain, role_id=role_id, secret_id=secret_id)).login)
    # Vault answers 400 "HTTP request to an HTTPS server", or closes the connection mid-request.
    assert "Vault speaks HTTPS" in str(exc)
    assert "use https://" in str(exc)

    # https:// to a plain-HTTP server
    exc = failure(VaultReader(VaultSettings(openbao.addr.replace("http://", "https://"), token="t")).login)
    assert "TLS verification" in str(exc)


def test_shared_server_refuses_faults(openbao: OpenBaoServer):
    with pytest.raises(RuntimeError, match="openbao_disposable"):
        openbao.seal()
    with pytest.raises(RuntimeError, match="openbao_disposable"):
        openbao.stop()
    assert openbao.running

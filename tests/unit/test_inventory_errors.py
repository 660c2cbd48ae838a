"""Inventory validation: every problem names the file, the 1-based line and the field path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from unitsupport import MINIMAL_COMPOSE, ONE_STACK_INVENTORY, line_of, write_tree

from model.desired import load_desired_state
from model.errors import InventoryError
from model.inventory import HealthCheck, tcp_endpoint
from model.inventory_loader import load_inventory
from model.yamlpos import format_path, load_with_lines

REPO_ROOT = Path(__file__).resolve().parents[2]

VALID = ONE_STACK_INVENTORY


def test_a_minimal_inventory_loads_with_defaults(tmp_path):
    inv = load_inventory(write_tree(tmp_path, VALID, {"web": MINIMAL_COMPOSE}))
    assert list(inv.hosts) == ["alpha"]
    assert inv.hosts["alpha"].user == "root" and inv.hosts["alpha"].port == 22
    assert inv.phase_order() == ["base"]
    assert inv.stack_phase() == {"web": "base"}
    assert inv.stack("web").hosts == ["alpha"]
    assert inv.state_dir("alpha") == ".homelab"
    assert inv.min_free_disk_mb("alpha") == 1024
    assert inv.health_timeout_s("web") == 120


# (id, inventory text, needle on the expected line, which occurrence, field path, message part)
CASES = [
    ("unknown top-level key", VALID + "colour: blue\n", "colour:", 1, "colour", "unknown key"),
    ("unknown key in a stack", VALID + "        replicas: 2\n", "replicas:", 1,
     "phases.base.stacks.web.replicas", "unknown key"),
    ("unknown key in a host", VALID.replace("address: 10.0.0.1", "address: 10.0.0.1\n    adress: 10.0.0.2"),
     "adress:", 1, "hosts.alpha.adress", "unknown key"),
    ("stack on an unknown host", VALID.replace("hosts: [alpha]", "hosts:\n          - alpha\n          - gamma"),
     "- gamma", 1, "phases.base.stacks.web.hosts[1]", "unknown host 'gamma' (known: alpha)"),
    ("duplicate host in a stack", VALID.replace("[alpha]", "[alpha, alpha]"), "[alpha, alpha]", 1,
     "phases.base.stacks.web.hosts[1]", "duplicate host 'alpha'"),
    ("dependency cycle", """
     hosts:
       alpha:
         address: 10.0.0.1
     phases:
       first:
         depends_on: [second]
         stacks:
           web:
             hosts: [alpha]
       second:
         depends_on: [first]
         stacks: {}
     """, "depends_on: [second]", 1, "phases.first.depends_on", "dependency cycle: first -> second -> first"),
    ("three-phase cycle", """
     hosts:
       alpha:
         address: 10.0.0.1
     phases:
       base:
         stacks:
           web:
             hosts: [alpha]
       a:
         depends_on: [base, c]
         stacks: {}
       b:
         depends_on: [a]
         stacks: {}
       c:
         depends_on: [b]
         stacks: {}
     """, "depends_on: [base, c]", 1, "phases.a.depends_on", "dependency cycle: a -> c -> b -> a"),
    ("unknown phase dependency", VALID + "  later:\n    depends_on: [nowhere]\n    stacks: {}\n",
     "depends_on: [nowhere]", 1, "phases.later.depends_on[0]", "unknown phase 'nowhere'"),
    ("duplicate phase dependency", VALID + "  later:\n    depends_on: [base, base]\n    stacks: {}\n",
     "depends_on: [base, base]", 1, "phases.later.depends_on[1]", "duplicate dependency 'base'"),
    ("duplicate stack in two phases", VALID + "  later:\n    stacks:\n      web:\n        hosts: [alpha]\n",
     "web:", 2, "phases.later.stacks.web", "duplicate stack: already in phase 'base'"),
    ("missing compose file", VALID + "      ghost:\n        hosts: [alpha]\n", "ghost:", 1,
     "phases.base.stacks.ghost", "compose file not found"),
    ("missing explicit compose file", VALID + "        compose: elsewhere/web.yaml\n", "compose: elsewhere", 1,
     "phases.base.stacks.web.compose", "compose file not found"),
    ("health check with http and tcp",
     VALID + "        health:\n          checks:\n            - http: http://127.0.0.1:80/\n              tcp: 5432\n",
     "- http:", 1,
     "phases.base.stacks.web.health.checks[0]", "exactly one of `http` or `tcp`"),
    ("health check with neither", VALID + "        health:\n          checks:\n            - expect_status: 204\n",
     "- expect_status", 1, "phases.base.stacks.web.health.checks[0]", "exactly one of `http` or `tcp`"),
    ("https health URL", VALID + "        health:\n          checks:\n            - http: https://127.0.0.1:443/\n",
     "- http:", 1, "phases.base.stacks.web.health.checks[0].http", "`http` must look like"),
    ("health URL without port", VALID + "        health:\n          checks:\n            - http: http://127.0.0.1/x\n",
     "- http:", 1, "phases.base.stacks.web.health.checks[0].http", "explicit port"),
    ("bad tcp target", VALID + "        health:\n          checks:\n            - tcp: localhost:http\n",
     "- tcp:", 1, "phases.base.stacks.web.health.checks[0].tcp", "`tcp` must be a port or host:port"),
    ("missing hosts", "phases: {}\n", "phases:", 1, "hosts", "required field is missing"),
    ("bad port", VALID.replace("address: 10.0.0.1", "address: 10.0.0.1\n    port: 70000"), "port: 70000", 1,
     "hosts.alpha.port", "less than or equal to 65535"),
    ("bad environment", VALID.replace("address: 10.0.0.1", "address: 10.0.0.1\n    environment: prod"),
     "environment: prod", 1, "hosts.alpha.environment", "production"),
    ("bad host name", VALID.replace("alpha", "Alpha"), "Alpha:", 1, "hosts.Alpha", "must match"),
    ("stack with no host", VALID.replace("[alpha]", "[]"), "hosts: []", 1, "phases.base.stacks.web.hosts",
     "at least 1 item"),
]


@pytest.mark.parametrize(("text", "needle", "occurrence", "field", "what"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_inventory_problem_names_file_line_and_field(tmp_path, text, needle, occurrence, field, what):
    path = write_tree(tmp_path, text, {"web": MINIMAL_COMPOSE})
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    written = path.read_text()
    expected = f"{path}:{line_of(written, needle, occurrence)}: {field}: "
    matching = [p for p in caught.value.problems if p.startswith(expected)]
    assert matching, f"no problem starts with {expected!r}: {caught.value.problems}"
    assert what in matching[0]
    assert expected in str(caught.value)


def test_display_name_replaces_the_path_in_messages(tmp_path):
    path = write_tree(tmp_path, VALID + "colour: blue\n", {"web": MINIMAL_COMPOSE})
    with pytest.raises(InventoryError) as caught:
        load_inventory(path, display="homelab.yaml@v2")
    line = line_of(path.read_text(), "colour:")
    assert caught.value.problems == [f"homelab.yaml@v2:{line}: colour: unknown key"]
    assert str(path) not in str(caught.value)


def test_every_problem_is_reported_at_once(tmp_path):
    text = VALID.replace("[alpha]", "[alpha, gamma]") + "      ghost:\n        hosts: [alpha]\n"
    path = write_tree(tmp_path, text, {"web": MINIMAL_COMPOSE})
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert len(caught.value.problems) == 2
    assert any("unknown host 'gamma'" in p for p in caught.value.problems)
    assert any("compose file not found" in p for p in caught.value.problems)


@pytest.mark.parametrize(("text", "needle"), [
    ("hosts:\n  alpha:\n    address: 10.0.0.1: 22\nphases: {}\n", "address:"),
    ("hosts:\n  alpha:\n    address: [10.0.0.1\nphases: {}\n", "phases:"),
    ("hosts:\n  alpha:\n\taddress: 10.0.0.1\n", "address:"),
    ("hosts: {alpha: {address: 10.0.0.1}\nphases: {}\n", "phases:"),
    ("hosts: {}\n? [a, b]\n: 1\n", "? [a, b]"),
])
def test_invalid_yaml_syntax_names_the_line(tmp_path, text, needle):
    path = tmp_path / "homelab.yaml"
    path.write_text(text)
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert caught.value.problems[0].startswith(f"{path}:{line_of(text, needle)}: invalid YAML")


@pytest.mark.parametrize(("text", "what"), [
    ("", "must be a mapping"),
    ("- a\n- b\n", "must be a mapping"),
    ("just a string\n", "must be a mapping"),
])
def test_an_inventory_that_is_not_a_mapping(tmp_path, text, what):
    path = tmp_path / "homelab.yaml"
    path.write_text(text)
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert caught.value.problems == [f"{path}:1: the inventory must be a mapping with hosts and phases"]


def test_a_missing_inventory_file(tmp_path):
    with pytest.raises(InventoryError, match="cannot read inventory"):
        load_inventory(tmp_path / "nope.yaml")


DUPLICATE_HOST = """
hosts:
  alpha:
    address: 10.0.0.1
  alpha:
    address: 10.0.0.2
phases:
  base:
    stacks:
      web:
        hosts: [alpha]
"""


def test_duplicate_yaml_key_is_rejected(tmp_path):
    path = write_tree(tmp_path, DUPLICATE_HOST, {"web": MINIMAL_COMPOSE})
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert len(caught.value.problems) == 1
    assert f"{path}:" in caught.value.problems[0]
    assert "hosts.alpha: duplicate key" in caught.value.problems[0]


def test_duplicate_yaml_key_names_the_line_of_the_duplicate(tmp_path):
    path = write_tree(tmp_path, DUPLICATE_HOST, {"web": MINIMAL_COMPOSE})
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    second = line_of(path.read_text(), "alpha:", 2)
    assert caught.value.problems == [f"{path}:{second}: hosts.alpha: duplicate key"]


# ---------------------------------------------------------------------------------------------
# compose files: checked when the desired state is loaded
# ---------------------------------------------------------------------------------------------

COMPOSE_CASES = [
    ("invalid YAML", "services:\n  web:\n    image: nginx: 1\n", "image:", "invalid YAML"),
    ("unclosed flow mapping", "services:\n  web: {image: nginx\n  db:\n    image: redis\n", "db:", "invalid YAML"),
    ("service without image", "services:\n  web:\n    image: nginx\n  db:\n    restart: always\n", "db:",
     "services.db.image: every service needs an image"),
    ("service with a build only", "services:\n  api:\n    build: .\n", "api:",
     "services.api.image: every service needs an image"),
    ("empty image", "services:\n  web:\n    image: ''\n", "web:", "services.web.image"),
    ("no services", "volumes: {}\n", "volumes:", "services: a compose file needs a non-empty `services` mapping"),
    ("empty file", "", None, "needs a non-empty `services` mapping"),
]


@pytest.mark.parametrize(("compose", "needle", "what"), [c[1:] for c in COMPOSE_CASES],
                         ids=[c[0] for c in COMPOSE_CASES])
def test_compose_file_problem_names_file_and_line(tmp_path, compose, needle, what):
    path = write_tree(tmp_path, VALID, {"web": compose})
    with pytest.raises(InventoryError) as caught:
        load_desired_state(path)
    compose_file = tmp_path / "stacks" / "web" / "compose.yaml"
    line = line_of(compose, needle) if needle else 1
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{compose_file}:{line}: ")
    assert what in caught.value.problems[0]


def images_of(tmp_path: Path, compose: str) -> dict[str, str]:
    return load_desired_state(write_tree(tmp_path, VALID, {"web": compose})).stacks["web"].images


def test_compose_images_are_read_per_service(tmp_path):
    text = "services:\n  server:\n    image: ghcr.io/goauthentik/server:2024.8.3\n  worker:\n    image: w:1\n"
    assert images_of(tmp_path, text) == {"server": "ghcr.io/goauthentik/server:2024.8.3", "worker": "w:1"}


def test_compose_file_with_a_duplicate_key_is_rejected(tmp_path):
    text = "services:\n  web:\n    image: nginx:1.26\n    image: nginx:1.27\n"
    with pytest.raises(InventoryError, match="duplicate key"):
        images_of(tmp_path, text)


MERGED_COMPOSE = """
x-authentik: &authentik
  image: ghcr.io/goauthentik/server:2024.8.3
  restart: unless-stopped
services:
  server:
    <<: *authentik
    command: server
  worker:
    <<: *authentik
    command: worker
"""


def test_compose_merge_keys_are_resolved(tmp_path):
    assert images_of(tmp_path, MERGED_COMPOSE) == {
        "server": "ghcr.io/goauthentik/server:2024.8.3", "worker": "ghcr.io/goauthentik/server:2024.8.3"}


def test_inventory_with_a_merge_key_loads_or_names_the_line(tmp_path):
    text = VALID.replace("hosts:\n  alpha:\n    address: 10.0.0.1",
                         "x-host: &host\n  user: deploy\nhosts:\n  alpha:\n    <<: *host\n    address: 10.0.0.1")
    path = write_tree(tmp_path, text, {"web": MINIMAL_COMPOSE})
    try:
        inv = load_inventory(path)
    except InventoryError as exc:  # rejecting merge keys is acceptable if it says where
        assert f"{path}:" in str(exc)
    else:
        assert inv.hosts["alpha"].user == "deploy"


def test_compose_file_that_is_not_utf8(tmp_path):
    path = write_tree(tmp_path, VALID)
    compose_file = tmp_path / "stacks" / "web" / "compose.yaml"
    compose_file.parent.mkdir(parents=True)
    compose_file.write_bytes("services:\n  web:\n    image: nginx  # café\n".encode("latin-1"))
    with pytest.raises(InventoryError, match=re.escape(str(compose_file))):
        load_desired_state(path)


# ---------------------------------------------------------------------------------------------
# phase order
# ---------------------------------------------------------------------------------------------

ORDER_CASES = [
    ("yaml order without dependencies", [("a", []), ("b", []), ("c", [])], ["a", "b", "c"]),
    ("dependency moves a phase later", [("a", ["b"]), ("b", []), ("c", [])], ["b", "a", "c"]),
    ("chain written backwards", [("c", ["b"]), ("b", ["a"]), ("a", [])], ["a", "b", "c"]),
    ("yaml order breaks ties among ready phases", [("base", []), ("z", ["base"]), ("y", ["base"]), ("x", [])],
     ["base", "z", "y", "x"]),
    ("diamond", [("top", ["left", "right"]), ("left", ["root"]), ("right", ["root"]), ("root", [])],
     ["root", "left", "right", "top"]),
]


@pytest.mark.parametrize(("phases", "expected"), [c[1:] for c in ORDER_CASES], ids=[c[0] for c in ORDER_CASES])
def test_phase_order_respects_depends_on_with_yaml_order_as_tie_break(tmp_path, phases, expected):
    lines = ["hosts:", "  alpha:", "    address: 10.0.0.1", "phases:"]
    for name, deps in phases:
        lines += [f"  {name}:", f"    depends_on: [{', '.join(deps)}]", "    stacks: {}"]
    path = tmp_path / "homelab.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert load_inventory(path).phase_order() == expected


# ---------------------------------------------------------------------------------------------
# small pure helpers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    (5432, ("127.0.0.1", 5432)),
    ("5432", ("127.0.0.1", 5432)),
    ("10.0.0.5:6379", ("10.0.0.5", 6379)),
    ("[::1]:80", ("[::1]", 80)),
])
def test_tcp_endpoint(value, expected):
    assert tcp_endpoint(value) == expected


@pytest.mark.parametrize("value", ["", "host:", "host:0", "host:65536", "host:http", ":-1"])
def test_tcp_endpoint_rejects(value):
    with pytest.raises(ValueError):
        tcp_endpoint(value)


def test_health_check_endpoint_and_description():
    check = HealthCheck(http="http://127.0.0.1:9002/-/health/live/", expect_status=204)
    assert check.endpoint() == ("127.0.0.1", 9002)
    assert check.describe() == "http http://127.0.0.1:9002/-/health/live/"
    assert HealthCheck(tcp="127.0.0.1:5432").describe() == "tcp 127.0.0.1:5432"


@pytest.mark.parametrize(("path", "expected"), [
    ((), "(document)"),
    (("hosts",), "hosts"),
    (("phases", "core", "stacks", "traefik", "hosts", 0), "phases.core.stacks.traefik.hosts[0]"),
    (("checks", 0, 1), "checks[0][1]"),
])
def test_format_path(path, expected):
    assert format_path(path) == expected


def test_yaml_lines_are_one_based_and_duplicates_are_recorded():
    doc = load_with_lines("a: 1\nb:\n  - x\n  - y\na: 2\n")
    assert doc.data == {"a": 1, "b": ["x", "y"]}
    assert doc.lines[("a",)] == 1
    assert doc.lines[("b", 1)] == 4
    assert doc.duplicates == [(("a",), 5)]
    assert doc.line_of(("b", 1, "deeper")) == 4


# ---------------------------------------------------------------------------------------------
# the real inventory
# ---------------------------------------------------------------------------------------------

REAL_STACKS = {
    "postgres": ("foundation", ["rtx1080"]), "redis": ("foundation", ["rtx1080"]),
    "traefik": ("core", ["thinkpad"]), "authentik": ("core", ["thinkpad"]), "portainer": ("core", ["thinkpad"]),
    "monitoring": ("apps", ["thinkpad"]), "homeassistant": ("apps", ["thinkpad"]), "media": ("apps", ["rtx1080"]),
    "jjeco-heavy": ("ai", ["rtx1080"]), "jjeco-light": ("ai", ["vps", "thinkpad"]),
    "newsletter": ("edge", ["vps"]), "api-gateway": ("edge", ["vps"]),
}


def test_the_real_inventory_loads():
    inv = load_inventory(REPO_ROOT / "deployments" / "homelab.yaml")
    assert {name: host.address for name, host in inv.hosts.items()} == {
        "vps": "91.107.198.37", "thinkpad": "192.168.16.7", "rtx1080": "192.168.17.1"}
    assert inv.phase_order() == ["foundation", "core", "apps", "ai", "edge"]
    assert len(inv.stack_phase()) == 12
    assert {s: (p, inv.stack(s).hosts) for s, p in inv.stack_phase().items()} == REAL_STACKS
    assert inv.hosts["rtx1080"].gpu and not inv.hosts["vps"].gpu
    assert inv.min_free_disk_mb("rtx1080") == 10240 and inv.min_free_disk_mb("vps") == 2048


def test_the_real_desired_state_has_every_compose_file():
    desired = load_desired_state(REPO_ROOT / "deployments" / "homelab.yaml")
    assert list(desired.stacks) == list(REAL_STACKS)  # phase order, YAML order within a phase
    assert desired.stacks["authentik"].images == {"server": "ghcr.io/goauthentik/server:2024.8.3",
                                                  "worker": "ghcr.io/goauthentik/server:2024.8.3"}
    assert desired.targeted_hosts() == ["vps", "thinkpad", "rtx1080"]
    assert all(s.config_hash.startswith("sha256:") and len(s.config_hash) == 71 for s in desired.stacks.values())

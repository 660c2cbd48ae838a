"""Compose as compose understands it: the normalized model from a real `docker compose config`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from unitsupport import ONE_STACK_INVENTORY, dedent, line_of

from model.compose_model import affected_services
from model.desired import load_desired_state
from model.errors import InventoryError

pytestmark = pytest.mark.usefixtures("own_compose_cache")


@pytest.fixture
def own_compose_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def stack_tree(root: Path, files: dict[str, str], stack_keys: str = "") -> Path:
    two_hosts = (ONE_STACK_INVENTORY.replace("hosts: [alpha]", "hosts: [alpha, beta]")
                 .replace("    address: 10.0.0.1\n", "    address: 10.0.0.1\n  beta:\n    address: 10.0.0.2\n"))
    keys = "".join(f"        {line}\n" for line in dedent(stack_keys).splitlines())
    inventory = dedent(two_hosts) + keys
    (root / "homelab.yaml").parent.mkdir(parents=True, exist_ok=True)
    (root / "homelab.yaml").write_text(inventory)
    for name, text in files.items():
        path = root / "stacks" / "web" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text))
    return root / "homelab.yaml"


def web(root: Path, files: dict[str, str], stack_keys: str = ""):
    return load_desired_state(stack_tree(root, files, stack_keys)).stacks["web"]


REALISTIC = {
    "compose.yaml": """
        x-common: &common
          restart: unless-stopped
          init: true
        include:
          - db/compose.yaml
        services:
          app:
            <<: *common
            image: "ghcr.io/acme/app:${APP_TAG:-1.0}"
            volumes: ["./config/app.yml:/etc/app.yml:ro", "appdata:/data"]
            configs: [{source: rules, target: /rules.yml}]
          worker:
            extends: {file: base.yaml, service: worker}
        configs:
          rules: {file: ./rules.yml}
        volumes:
          appdata: {}
        """,
    "base.yaml": """
        services:
          worker:
            image: "ghcr.io/acme/worker:${WORKER_TAG:-2}"
        """,
    "db/compose.yaml": """
        services:
          db:
            image: "postgres:${PG_MAJOR}"
            volumes: ["./init.sql:/docker-entrypoint-initdb.d/init.sql:ro"]
        """,
    "db/init.sql": "CREATE TABLE t (id int);\n",
    ".env": "APP_TAG=1.1\nPG_MAJOR=16\n",
    "config/app.yml": "a: 1\n",
    "rules.yml": "groups: []\n",
}


def test_include_extends_anchors_and_env_are_read_as_compose_reads_them(tmp_path):
    stack = web(tmp_path, REALISTIC)
    assert stack.images == {"app": "ghcr.io/acme/app:1.1", "worker": "ghcr.io/acme/worker:2",
                            "db": "postgres:16"}
    assert stack.mounts == {"app": ("config/app.yml", "rules.yml"), "worker": (), "db": ("db/init.sql",)}


def test_inventory_env_wins_over_dot_env_and_per_host_env_wins_over_both(tmp_path):
    stack = web(tmp_path, REALISTIC, """
        env: {APP_TAG: "2.0"}
        per_host:
          beta:
            env: {PG_MAJOR: "17"}
        """)
    assert stack.for_host("alpha").images["app"] == "ghcr.io/acme/app:2.0"
    assert stack.for_host("alpha").images["db"] == "postgres:16"
    assert stack.for_host("beta").images["db"] == "postgres:17"
    assert stack.for_host("alpha").config_hash != stack.for_host("beta").config_hash


def test_profiles_per_stack_and_per_host(tmp_path):
    files = {"compose.yaml": """
        services:
          app: {image: "app:1"}
          gpu: {image: "gpu:1", profiles: [gpu]}
        """}
    plain = web(tmp_path / "a", files)
    assert plain.services == ("app",)
    stack = web(tmp_path / "b", files, """
        per_host:
          beta:
            profiles: [gpu]
        """)
    assert stack.for_host("alpha").services == ("app",)
    assert stack.for_host("beta").services == ("app", "gpu")


def test_compose_files_in_order_as_an_override(tmp_path):
    files = {"base.yaml": "services:\n  app:\n    image: app:1\n",
             "gpu.override.yaml": "services:\n  app:\n    image: app:1-cuda\n"}
    stack = web(tmp_path, files, "compose: [base.yaml, gpu.override.yaml]")
    assert stack.images == {"app": "app:1-cuda"}


def test_build_with_an_image_deploys_the_image(tmp_path):
    stack = web(tmp_path, {"compose.yaml": "services:\n  app:\n    build: .\n    image: ghcr.io/acme/app:3\n"})
    assert stack.images == {"app": "ghcr.io/acme/app:3"}


def test_build_without_an_image_is_refused_with_file_line_and_hint(tmp_path):
    text = "services:\n  web:\n    image: nginx:1\n  api:\n    build: ./api\n"
    with pytest.raises(InventoryError) as caught:
        web(tmp_path, {"compose.yaml": text, "api/Dockerfile": "FROM scratch\n"})
    problem = caught.value.problems[0]
    assert problem.startswith(f"{tmp_path}/stacks/web/compose.yaml:{line_of(text, 'api:')}: services.api.image")
    assert "never builds on a host" in problem
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(("files", "where", "message"), [
    ({"compose.yaml": "services:\n  app:\n    image: ${TAG:?set TAG in .env}\n"}, "compose.yaml",
     "required variable TAG is missing a value: set TAG in .env"),
    ({"compose.yaml": "include: [missing/compose.yaml]\nservices:\n  app: {image: a}\n"}, "compose.yaml",
     "missing/compose.yaml: no such file or directory"),
    ({"compose.yaml": "include: [sub/compose.yaml]\nservices:\n  app: {image: a}\n",
      "sub/compose.yaml": "services:\n  b:\n   image: x\n  c: [\n"}, "compose.yaml:", "yaml: line"),
    ({"compose.yaml": "services:\n  app:\n    image: a\n    depends_on: [nothere]\n"}, "compose.yaml",
     "nothere"),
])
def test_compose_errors_are_inventory_errors_naming_the_file(tmp_path, files, where, message):
    with pytest.raises(InventoryError) as caught:
        web(tmp_path, files)
    problem = caught.value.problems[0]
    assert problem.startswith(f"{tmp_path}/stacks/web/{where}"), problem
    assert "docker compose config" in problem and message in problem
    assert str(tmp_path / "cache") not in problem and "homelab-compose-" not in problem  # no scratch paths


def test_a_secret_env_file_need_not_exist_locally(tmp_path):
    files = {"compose.yaml": "services:\n  app:\n    image: a:1\n    env_file: [.env.secrets]\n"}
    stack = web(tmp_path, files, """
        secrets:
          - path: apps/web
            keys: [PASSWORD]
        """)
    assert stack.images == {"app": "a:1"}
    assert ".env.secrets" not in stack.files.manifest()


def without_docker(tmp_path: Path, monkeypatch) -> None:
    """PATH with git only (the source reader needs it), so no docker at all."""
    only_git = tmp_path / "bin"
    only_git.mkdir()
    (only_git / "git").symlink_to(shutil.which("git"))
    monkeypatch.setenv("PATH", str(only_git))


def test_a_no_op_load_does_not_run_compose(tmp_path, monkeypatch):
    inventory = stack_tree(tmp_path, REALISTIC)
    first = load_desired_state(inventory).stacks["web"]
    without_docker(tmp_path, monkeypatch)
    again = load_desired_state(inventory).stacks["web"]
    assert (again.images, again.mounts, again.config_hash) == (first.images, first.mounts, first.config_hash)


def test_without_compose_the_raw_files_are_read(tmp_path, monkeypatch):
    without_docker(tmp_path, monkeypatch)
    stack = web(tmp_path, {"compose.yaml": "services:\n  app:\n    image: a:1\n    volumes: [./x:/x]\n"})
    assert stack.images == {"app": "a:1"}
    assert affected_services(stack.mounts, {"anything.conf"}) == ["app"]  # unknown mounts: recreate all


@pytest.mark.parametrize(("changed", "expected"), [
    (set(), []),
    ({"config/app.yml"}, ["app"]),
    ({"config/other.yml"}, ["app"]),  # a folder mount
    ({"db/init.sql"}, ["db"]),
    ({"README.md"}, []),
])
def test_which_services_a_file_change_recreates(changed, expected):
    mounts = {"app": ("config",), "db": ("db/init.sql",), "worker": ()}
    assert affected_services(mounts, changed) == expected


def test_a_hook_must_name_a_service_of_the_stack(tmp_path):
    with pytest.raises(InventoryError, match=r"hooks\.migrate\.service: 'db' is not a service of the stack"):
        web(tmp_path, {"compose.yaml": "services:\n  app: {image: a:1}\n"}, """
            hooks:
              migrate: {service: db, run: ./migrate.sh}
            """)


def test_hooks_are_part_of_the_config_hash(tmp_path):
    files = {"compose.yaml": "services:\n  app: {image: a:1}\n"}
    plain = web(tmp_path / "a", files)
    hooked = web(tmp_path / "b", files, "hooks: {migrate: {service: app, run: ./migrate.sh}}")
    assert plain.config_hash != hooked.config_hash


GPU_STACK = {"compose.yaml": """
    services:
      model:
        image: ollama/ollama:0.3
      sidecar:
        image: busybox:1.36
    """}


def test_a_gpu_stack_ships_a_generated_reservation_that_compose_reads(tmp_path):
    import json
    import subprocess

    from model.gpu_reservation import GPU_OVERRIDE

    plain = web(tmp_path / "a", GPU_STACK)
    stack = web(tmp_path / "b", GPU_STACK, "gpu: {count: 1, memory_mb: 4000, services: [model]}")
    assert stack.compose.compose_files == ("compose.yaml", GPU_OVERRIDE)  # last: it wins over the stack's own
    assert GPU_OVERRIDE in stack.files.manifest() and stack.config_hash != plain.config_hash
    # the real compose CLI renders the reservation, on the named service only
    project = tmp_path / "rendered"
    for item in stack.files.files:
        (project / item.path).parent.mkdir(parents=True, exist_ok=True)
        (project / item.path).write_bytes(item.data)
    done = subprocess.run(["docker", "compose", "--project-directory", str(project), "-f", "compose.yaml",
                           "-f", GPU_OVERRIDE, "config", "--format", "json"], cwd=project,
                          capture_output=True, text=True, check=True)
    services = json.loads(done.stdout)["services"]
    devices = services["model"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "deploy" not in services["sidecar"]


def test_gpu_services_must_be_services_of_the_stack(tmp_path):
    with pytest.raises(InventoryError) as caught:
        web(tmp_path, GPU_STACK, "gpu: {services: [llm]}")
    assert "gpu.services: 'llm' is not a service of the stack (services: model, sidecar)" in str(caught.value)

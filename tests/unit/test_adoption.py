"""``homelab import``'s pure part: what a running project's files become in the repo."""

from __future__ import annotations

from model.adoption import AdoptedProject, adopt, referenced_files

COMPOSE = """
services:
  app:
    image: app:1
    env_file: [app.env, {path: ./more.env, required: false}]
    volumes: ["./conf/app.yml:/etc/app.yml", "data:/data", "/srv/media:/media", "../escape:/x"]
    configs: [rules]
configs:
  rules: {file: ./rules.yml}
volumes: {data: {}}
"""


def test_references_are_the_relative_files_only():
    refs, env_files = referenced_files(COMPOSE)
    assert refs == ["conf/app.yml", "rules.yml", "app.env", "more.env"]
    assert env_files == ["app.env", "more.env"]
    assert referenced_files("services: [unclosed") == ([], [])


def test_env_files_with_secrets_become_vault_entries_and_are_not_copied():
    project = AdoptedProject(name="app", working_dir="/opt/app", compose_files=("/opt/app/compose.yaml",),
                             files={"/opt/app/compose.yaml": COMPOSE.encode(),
                                    "/opt/app/app.env": b"DB_PASSWORD=hunter2\nMODE=x\n",
                                    "/opt/app/.env": b"TAG=1\n", "/opt/app/conf/app.yml": b"a: 1\n",
                                    "/etc/shared.yml": b"b: 2\n"})
    adoption = adopt(project, "vps", {".env", "app.env"})
    assert sorted(adoption.files) == [".env", "compose.yaml", "conf/app.yml", "shared.yml"]
    assert b"hunter2" not in b"".join(adoption.files.values())
    assert adoption.stack["secrets"] == [{"path": "homelab/app/app-env", "keys": ["DB_PASSWORD", "MODE"],
                                          "env_file": "app.env"}]
    assert adoption.stack["project_dir"] == "/opt/app" and adoption.stack["compose"] == ["compose.yaml"]
    assert any("outside the working dir" in note for note in adoption.skipped)
    assert not any("hunter2" in note for note in adoption.skipped)

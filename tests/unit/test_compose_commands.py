"""Command builders: exact argv, safe quoting, and the inline sh scripts run locally."""

from __future__ import annotations

import json
import shlex
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from model.releases import ReleaseRecord
from model.stack_files import StackFile, StackFiles
from tasks.host_commands.compose import (
    compose_down,
    compose_logs,
    compose_recreate,
    compose_up,
    image_ids,
    pull_images,
    release_project,
)
from tasks.host_commands.containers import wait_settled
from tasks.host_commands.layout import release_compose_file, release_dir, releases_dir, stack_dir
from tasks.host_commands.release_files import (
    START,
    commit_release,
    restore_release,
    settle_rollback,
    stage_release,
    start_release,
    upload_file,
)
from tasks.host_commands.survey import survey

REL = "20260101T000000Z-aaaaaa"


def _release_record(release: str = REL, **fields) -> ReleaseRecord:
    return ReleaseRecord(id=release, stack="media", host="h", commit=None, config_hash="sha256:x", images={},
                         created_at="2026-01-01T00:00:00+00:00", flow_run_id=None, **fields)


LEGACY = release_project("s", _release_record())  # recorded before stacks were folders
FOLDER = release_project(".homelab", _release_record(
    compose_files=["compose.yaml", "gpu.override.yaml"], profiles=["gpu"], env={"TAG": "2"},
    files={".env": "644:ab", "compose.yaml": "644:cd"}))
UP = ["up", "-d", "--remove-orphans", "--pull", "never", "--no-build"]


@dataclass(frozen=True)
class ScriptCall:
    """``sh -c <script> <argv...>``: the script's name ($0) and its operands."""

    argv: list[str]

# ---------------------------------------------------------------------------------------------
# exact argv
# ---------------------------------------------------------------------------------------------

BUILDERS = [
    ("layout stack_dir", stack_dir(".homelab", "media"), ".homelab/stacks/media"),
    ("layout releases_dir", releases_dir(".homelab", "media"), ".homelab/releases/media"),
    ("layout release_dir", release_dir(".homelab", "media", REL), f".homelab/releases/media/{REL}"),
    ("layout release_compose_file", release_compose_file("/srv/state", "media", REL),
     f"/srv/state/releases/media/{REL}/compose.yaml"),
    ("compose of a legacy release", LEGACY.argv("ps", "--format", "json"),
     ["docker", "compose", "-p", "media", "--project-directory", "s/stacks/media",
      "-f", f"s/releases/media/{REL}/compose.yaml", "ps", "--format", "json"]),
    ("compose of a folder release", FOLDER.argv("ps"),
     ["docker", "compose", "-p", "media", "--project-directory", ".homelab/stacks/media",
      "--env-file", ".homelab/stacks/media/.env", "--env-file", f".homelab/releases/media/{REL}/homelab.env",
      "-f", ".homelab/stacks/media/compose.yaml", "-f", ".homelab/stacks/media/gpu.override.yaml",
      "--profile", "gpu", "ps"]),
    ("compose of an adopted project dir", release_project("s", _release_record(compose_files=["docker-compose.yml"],
                                                                       project_dir="/opt/media/")).argv("ps"),
     ["docker", "compose", "-p", "media", "--project-directory", "/opt/media", "-f",
      "/opt/media/docker-compose.yml", "ps"]),
    ("compose_up", compose_up(LEGACY),
     ["docker", "compose", "-p", "media", "--project-directory", "s/stacks/media",
      "-f", f"s/releases/media/{REL}/compose.yaml", *UP]),
    ("compose_recreate", compose_recreate(LEGACY, ["web", "db"]),
     [*LEGACY.argv(), *UP, "--no-deps", "--force-recreate", "--", "web", "db"]),
    ("pull_images", pull_images(["redis:7", "ghcr.io/x/y:1"]), ScriptCall(["pull-images", "redis:7",
                                                                  "ghcr.io/x/y:1"])),
    ("compose_logs default", compose_logs("media"),
     ["docker", "compose", "-p", "media", "logs", "--no-color", "--timestamps", "--tail", "50"]),
    ("compose_logs tail", compose_logs("media", tail=7),
     ["docker", "compose", "-p", "media", "logs", "--no-color", "--timestamps", "--tail", "7"]),
    ("compose_down", compose_down("media"),
     ["docker", "compose", "-p", "media", "down", "--remove-orphans"]),
    ("image_ids", image_ids(["nginx:1.27", "redis:7"]),
     ["docker", "image", "inspect", "--format", "{{.Id}}", "--", "nginx:1.27", "redis:7"]),
    ("wait_settled", wait_settled("media", 2, 19.7), ScriptCall(["wait-settled", "media", "2", "19"])),
    ("wait_settled past deadline", wait_settled("media", 1, -3),
     ScriptCall(["wait-settled", "media", "1", "0"])),
    ("stage_release", stage_release("s/r", "s/base", ["old.conf"], ["a:1", "b:2"]),
     ScriptCall(["stage-release", "s/r", "s/base", "old.conf", "--", "a:1", "b:2"])),
    ("stage_release first", stage_release("s/r", None, [], ["a:1"]),
     ScriptCall(["stage-release", "s/r", "", "--", "a:1"])),
    ("upload_file default mode", upload_file(".homelab/releases/media/x/compose.yaml"),
     ScriptCall(["upload", ".homelab/releases/media/x/compose.yaml", "644"])),
    ("upload_file 0o600", upload_file("/srv/a b/.env", 0o600), ScriptCall(["upload", "/srv/a b/.env", "600"])),
    ("upload_file 0o755", upload_file("run.sh", 0o755), ScriptCall(["upload", "run.sh", "755"])),
    ("commit_release activate", commit_release(".homelab", "media", REL, 5, True),
     ScriptCall(["commit-release", ".homelab/releases/media", REL, "5", "1", ""])),
    ("commit_release keep", commit_release("/srv/state", "redis", REL, 3, False),
     ScriptCall(["commit-release", "/srv/state/releases/redis", REL, "3", "0", ""])),
    ("commit_release protect", commit_release("s", "redis", REL, 3, True, protect="OLD"),
     ScriptCall(["commit-release", "s/releases/redis", REL, "3", "1", "OLD"])),
    ("start_release", start_release("s", "media", REL, '{"release": "x"}', LEGACY, ["gone.yml"], [".env.secrets"]),
     ScriptCall(["start-release", "s/releases/media", '{"release": "x"}',
      f"s/releases/media/{REL}", "s/stacks/media", "gone.yml", "--", ".env.secrets", "--", *compose_up(LEGACY)])),
    ("restore_release", restore_release("s", "media", REL, {"b:2": "sha256:bb", "a:1": "sha256:aa"}, LEGACY),
     ScriptCall(["restore-release", "a:1", "sha256:aa", "b:2", "sha256:bb", "--",
      f"s/releases/media/{REL}", "s/stacks/media", "--", "--", *compose_up(LEGACY)])),
    ("settle_rollback restored", settle_rollback("s", "media", "OLD", REL),
     ScriptCall(["settle-rollback", "s/releases/media", "OLD", REL])),
    ("settle_rollback none", settle_rollback("s", "media", None, REL),
     ScriptCall(["settle-rollback", "s/releases/media", "", REL])),
    ("survey gpu", survey(".homelab", True), ScriptCall(["homelab-survey", ".homelab", "1"])),
    ("survey no gpu", survey("/srv/state", False), ScriptCall(["homelab-survey", "/srv/state", "0"])),
]


@pytest.mark.parametrize(("built", "expected"), [b[1:] for b in BUILDERS], ids=[b[0] for b in BUILDERS])
def test_builder_returns_exact_argv(built, expected):
    if isinstance(expected, ScriptCall):
        # an inline script: its name ($0) and operands; what the script does is run in a real sh below
        assert built[:2] == ["sh", "-c"]
        assert built[3:] == expected.argv
    else:
        assert built == expected


def test_compose_up_never_pulls_never_builds_and_removes_orphans():
    argv = compose_up(FOLDER)
    up = argv.index("up")
    assert argv[argv.index("--pull") + 1] == "never"
    assert "--remove-orphans" in argv[up:] and "--no-build" in argv[up:]
    assert argv[argv.index("-p") + 1] == "media"


# ---------------------------------------------------------------------------------------------
# quoting: shlex.join of every builder is one safe shell string
# ---------------------------------------------------------------------------------------------

ODD_STATE = "/srv/home lab/it's $HOME; touch pwned; `touch pwned2`"

ODD_BUILT = {
    "compose_up": compose_up(release_project(ODD_STATE, _release_record(compose_files=["a b.yaml"], env={"X": "1"},
                                                                files={".env": "644:x"}))),
    "pull_images": pull_images(["web server:1"]),
    "compose_logs": compose_logs("media"),
    "compose_down": compose_down("media"),
    "image_ids": image_ids(["nginx:1.27", "ghcr.io/x/y@sha256:abc"]),
    "wait_settled": wait_settled("media", 3, 10),
    "stage_release": stage_release(f"{ODD_STATE}/r", f"{ODD_STATE}/base", ["a b"], ["web server:1"]),
    "upload_file": upload_file(f"{ODD_STATE}/compose.yaml", 0o640),
    "commit_release": commit_release(ODD_STATE, "media", REL, 5, True),
    "survey": survey(ODD_STATE, True),
}


@pytest.mark.parametrize("argv", ODD_BUILT.values(), ids=ODD_BUILT.keys())
def test_shlex_join_round_trips_to_the_same_argv(argv):
    joined = shlex.join(argv)
    assert isinstance(joined, str)
    assert shlex.split(joined) == argv


@pytest.mark.parametrize("name", ["compose_up", "compose_logs", "compose_down", "image_ids"])
def test_a_real_shell_sees_exactly_the_built_arguments(name, fake_bin, tmp_path):
    """Run the joined string through sh with a fake docker that echoes its argv."""
    env = fake_bin("docker", """printf '%s\\0' "$@" > "$ARGS_OUT"\n""")
    out = tmp_path / "args"
    argv = ODD_BUILT[name]
    subprocess.run(["sh", "-c", shlex.join(argv)], env={**env, "ARGS_OUT": str(out)}, check=True, cwd=tmp_path)
    seen = out.read_bytes().split(b"\0")[:-1]
    assert [a.decode() for a in seen] == argv[1:]
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


# ---------------------------------------------------------------------------------------------
# upload_file: the script runs locally
# ---------------------------------------------------------------------------------------------


def _run(argv: list[str], data: bytes = b"", **kwargs) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=data, capture_output=True, check=False, **kwargs)


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o755, 0o400])
def test_upload_writes_stdin_with_the_given_mode(tmp_path, mode):
    target = tmp_path / "new dir" / "deeper" / "compose.yaml"
    done = _run(upload_file(str(target), mode), b"services: {}\n")
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == b"services: {}\n"
    assert stat.S_IMODE(target.stat().st_mode) == mode
    assert [p.name for p in target.parent.iterdir()] == ["compose.yaml"]  # no temp file left behind


def test_upload_replaces_an_existing_file_by_rename(tmp_path):
    target = tmp_path / "compose.yaml"
    target.write_text("old\n")
    target.chmod(0o600)
    old_inode = target.stat().st_ino
    done = _run(upload_file(str(target), 0o644), b"new\n")
    assert done.returncode == 0, done.stderr
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert target.stat().st_ino != old_inode  # a new file renamed over the old one, not rewritten in place


@pytest.mark.parametrize(("sent", "size", "ok"), [(b"new\n", 4, True), (b"ne", 4, False), (b"", 4, False),
                                                  (b"", 0, True)])
def test_an_upload_cut_short_never_replaces_the_file(tmp_path, sent, size, ok):
    target = tmp_path / ".env.secrets"
    target.write_text("old\n")
    done = _run(upload_file(str(target), 0o600, size), sent)
    assert (done.returncode == 0) is ok, done.stderr
    assert target.read_bytes() == (sent if ok else b"old\n")
    assert [p.name for p in tmp_path.iterdir()] == [".env.secrets"]  # no temp file either way
    if not ok:
        assert done.returncode == 96 and f"{len(sent)} of {size} bytes" in done.stderr.decode()


def test_upload_failure_leaves_the_old_file(tmp_path):
    target = tmp_path / "compose.yaml"
    target.write_text("old\n")
    done = _run([*upload_file(str(target), 0o644)[:-1], "not-a-mode"], b"new\n")
    assert done.returncode != 0
    assert target.read_text() == "old\n"


# ---------------------------------------------------------------------------------------------
# commit_release: the script runs locally
# ---------------------------------------------------------------------------------------------

OLD = [f"2026010{day}T000000Z-{day}{day}{day}aaa" for day in range(1, 8)]  # seven, oldest first
NEW = "20260201T120000Z-bbbbbb"


def _record(release: str, status: str = "active") -> bytes:
    return ReleaseRecord(id=release, stack="media", host="rtx1080", commit="c0ffee", config_hash="sha256:1",
                         images={"jellyfin/jellyfin:10.9.11": "sha256:2"}, created_at="2026-02-01T12:00:00+00:00",
                         flow_run_id="run-1", status=status).to_json()


def _releases(tmp_path: Path, existing: list[str], current: str | None) -> tuple[str, Path]:
    state = str(tmp_path / "state dir")
    directory = Path(releases_dir(state, "media"))
    for release in existing:
        (directory / release).mkdir(parents=True)
        (directory / release / "release.json").write_text("{}")
    directory.mkdir(parents=True, exist_ok=True)
    if current:
        (directory / "current").write_text(current + "\n")
    return state, directory


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_dir())


def test_commit_release_activates_and_prunes_beyond_keep(tmp_path):
    state, directory = _releases(tmp_path, OLD, current=OLD[-1])
    done = _run(commit_release(state, "media", NEW, 5, True), _record(NEW))
    assert done.returncode == 0, done.stderr
    assert json.loads((directory / NEW / "release.json").read_text())["id"] == NEW
    assert (directory / "current").read_text() == NEW + "\n"
    assert _listing(directory) == sorted([*OLD[-4:], NEW])
    assert not (directory / "current.tmp").exists()
    assert not (directory / NEW / "release.json.tmp").exists()


def test_commit_release_without_activate_keeps_current(tmp_path):
    state, directory = _releases(tmp_path, OLD[:2], current=OLD[1])
    done = _run(commit_release(state, "media", NEW, 5, False), _record(NEW, "failed"))
    assert done.returncode == 0, done.stderr
    assert (directory / "current").read_text().strip() == OLD[1]
    assert json.loads((directory / NEW / "release.json").read_text())["status"] == "failed"
    assert _listing(directory) == sorted([*OLD[:2], NEW])


def test_commit_release_never_prunes_the_current_release(tmp_path):
    state, directory = _releases(tmp_path, OLD, current=OLD[0])  # current is the oldest of all
    done = _run(commit_release(state, "media", NEW, 3, False), _record(NEW, "failed"))
    assert done.returncode == 0, done.stderr
    assert _listing(directory) == sorted([OLD[0], *OLD[-2:], NEW])
    assert (directory / "current").read_text().strip() == OLD[0]


def test_commit_release_first_release_creates_current(tmp_path):
    state, directory = _releases(tmp_path, [], current=None)
    done = _run(commit_release(state, "media", NEW, 5, True), _record(NEW))
    assert done.returncode == 0, done.stderr
    assert (directory / "current").read_text() == NEW + "\n"
    assert ReleaseRecord.from_json((directory / NEW / "release.json").read_text()).id == NEW


def test_commit_release_leaves_unrelated_entries_alone(tmp_path):
    state, directory = _releases(tmp_path, OLD, current=OLD[-1])
    (directory / "notes").mkdir()
    (directory / "2026-not-a-release").mkdir()
    done = _run(commit_release(state, "media", NEW, 2, True), _record(NEW))
    assert done.returncode == 0, done.stderr
    assert _listing(directory) == sorted(["notes", "2026-not-a-release", OLD[-1], NEW])


# ---------------------------------------------------------------------------------------------
# wait_settled and stage_release: run locally against a fake docker
# ---------------------------------------------------------------------------------------------

FAKE_DOCKER = """
case "$1" in
  ps) printf '%s\\n' "$*" >> "$CALLS"; [ -n "$IDS" ] && printf '%s\\n' $IDS; exit 0 ;;
  inspect)
    shift
    if [ "$1" = --format ]; then
      n=$(cat "$CALLS.n" 2>/dev/null || echo 0); echo $((n + 1)) > "$CALLS.n"
      # the first $STARTING polls report a container still starting
      if [ "$n" -lt "${STARTING:-0}" ]; then echo running/starting; else printf '%s\\n' $STATES; fi
      exit 0
    fi
    printf '[{"Id": "%s"}]\\n' "$*" ;;
  image) shift 4; for i in "$@"; do [ "$i" = missing:1 ] && { echo "No such image: $i" >&2; exit 1; }
         echo "sha256:$i"; done ;;
  *) exit 99 ;;
esac
"""


@pytest.mark.parametrize(("ids", "states", "starting", "expected"), [
    ("", "", 0, []),
    ("abc123 def456", "running/healthy running/", 0, [{"Id": "abc123 def456"}]),
    ("abc123", "running/healthy", 2, [{"Id": "abc123"}]),  # waits through two "starting" polls
    ("abc123", "running/unhealthy", 0, [{"Id": "abc123"}]),  # unhealthy is settled: no more waiting
])
def test_wait_settled_polls_until_no_container_is_starting(fake_bin, tmp_path, ids, states, starting, expected):
    env = fake_bin("docker", FAKE_DOCKER)
    calls = tmp_path / "calls"
    want = len(ids.split()) or 1
    done = _run(wait_settled("media", want, 0 if not ids else 10),
                env={**env, "IDS": ids, "STATES": states, "STARTING": str(starting), "CALLS": str(calls)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == expected
    assert calls.read_text().splitlines()[0] == "ps -aq --filter label=com.docker.compose.project=media"
    if ids:
        assert int((tmp_path / "calls.n").read_text()) == starting + 1


def test_wait_settled_gives_up_at_the_deadline(fake_bin, tmp_path):
    env = fake_bin("docker", FAKE_DOCKER)
    done = _run(wait_settled("media", 1, 1), env={**env, "IDS": "abc", "STATES": "", "STARTING": "1000",
                                                   "CALLS": str(tmp_path / "calls")})
    assert done.returncode == 0
    assert json.loads(done.stdout) == [{"Id": "abc"}]
    # date +%s has whole seconds: the deadline comes 0-1 s after the start, 0.3 s between polls
    assert 1 <= int((tmp_path / "calls.n").read_text()) <= 12


def test_wait_settled_fails_when_docker_ps_fails(fake_bin):
    env = fake_bin("docker", "echo 'Cannot connect to the Docker daemon' >&2; exit 1\n")
    done = _run(wait_settled("media", 1, 5), env=env)
    assert done.returncode != 0
    assert b"[]" not in done.stdout


FILES = StackFiles((StackFile("compose.yaml", 0o644, b"services: {}\n"), StackFile("conf/app.yml", 0o644, b"v: 2\n"),
                    StackFile("run.sh", 0o755, b"#!/bin/sh\n")))


def test_stage_release_unpacks_the_tar_then_lists_image_ids(fake_bin, tmp_path):
    env = fake_bin("docker", FAKE_DOCKER)
    release = tmp_path / "releases" / "media" / REL
    tar = FILES.tar(extra={".env.secrets": (b"A='1'\n", 0o600)})
    done = subprocess.run(stage_release(str(release), None, [], ["a:1", "b:2"]), input=tar,
                          capture_output=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split() == ["sha256:a:1", "sha256:b:2"]
    assert (release / "files" / "conf" / "app.yml").read_bytes() == b"v: 2\n"
    assert stat.S_IMODE((release / "files" / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((release / "files" / "compose.yaml").stat().st_mode) == 0o644
    assert stat.S_IMODE((release / ".env.secrets").stat().st_mode) == 0o600


def test_stage_release_copies_the_base_and_brings_only_what_changed(fake_bin, tmp_path):
    env = fake_bin("docker", FAKE_DOCKER)
    base, release = tmp_path / "base", tmp_path / "new"
    (base / "files" / "conf").mkdir(parents=True)
    (base / "files" / "compose.yaml").write_bytes(b"services: {}\n")
    (base / "files" / "conf" / "app.yml").write_bytes(b"v: 1\n")
    (base / "files" / "old.conf").write_bytes(b"gone\n")
    tar = FILES.tar(only=["conf/app.yml"])
    done = subprocess.run(stage_release(str(release), str(base), ["old.conf"], ["a:1"]), input=tar,
                          capture_output=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    found = sorted(str(p.relative_to(release / "files")) for p in (release / "files").rglob("*") if p.is_file())
    assert found == ["compose.yaml", "conf/app.yml"]
    assert (release / "files" / "conf" / "app.yml").read_bytes() == b"v: 2\n"
    assert (base / "files" / "conf" / "app.yml").read_bytes() == b"v: 1\n"  # the base release is untouched


def test_stage_release_reports_a_missing_image_after_unpacking(fake_bin, tmp_path):
    env = fake_bin("docker", FAKE_DOCKER)
    done = subprocess.run(stage_release(str(tmp_path / "r"), None, [], ["missing:1"]), input=FILES.tar(),
                          capture_output=True, env=env, check=False)
    assert done.returncode == 1
    assert b"No such image: missing:1" in done.stderr
    assert (tmp_path / "r" / "files" / "compose.yaml").is_file()


@pytest.mark.parametrize("case", ["not a tar", "release dir blocked", "base missing"])
def test_stage_release_exits_97_when_the_upload_fails(fake_bin, tmp_path, case):
    env = fake_bin("docker", FAKE_DOCKER)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    release, base, data = tmp_path / "r", None, FILES.tar()
    if case == "not a tar":
        data = b"x" * 1024
    elif case == "release dir blocked":
        release = blocker / "sub"
    else:
        base = str(tmp_path / "nowhere")
    done = subprocess.run(stage_release(str(release), base, [], ["a:1"]), input=data,
                          capture_output=True, env=env, check=False)
    assert done.returncode == 97


def test_commit_release_never_prunes_the_protected_previous_release(tmp_path):
    state, directory = _releases(tmp_path, OLD, current=OLD[-1])
    done = _run(commit_release(state, "media", NEW, 2, True, protect=OLD[0]), _record(NEW))
    assert done.returncode == 0, done.stderr
    assert _listing(directory) == sorted([OLD[0], OLD[-1], NEW])


def _release_with_files(tmp_path: Path) -> tuple[Path, Path]:
    releases = tmp_path / "releases" / "media"
    files = releases / REL / "files"
    (files / "conf").mkdir(parents=True)
    (files / "compose.yaml").write_bytes(b"services: {}\n")
    (files / "conf" / "app.yml").write_bytes(b"v: 2\n")
    (files / "same.conf").write_bytes(b"same\n")
    (releases / REL / ".env.secrets").write_text("A='1'\n")
    (releases / REL / ".env.secrets").chmod(0o600)
    return releases, tmp_path / "stacks" / "media"


def test_start_release_writes_the_marker_installs_files_and_env_files_then_runs(tmp_path):
    releases, stackdir = _release_with_files(tmp_path)
    (stackdir / "data").mkdir(parents=True)
    (stackdir / "data" / "db.sqlite").write_bytes(b"precious")  # not the release's: never touched
    (stackdir / "same.conf").write_bytes(b"same\n")
    (stackdir / "dropped.conf").write_bytes(b"old\n")
    (stackdir / "conf" / "app.yml").mkdir(parents=True)  # what docker makes for a missing bind source
    inode = (stackdir / "same.conf").stat().st_ino
    argv = ["sh", "-c", START, "start-release", str(releases), '{"release": "x"}', str(releases / REL),
            str(stackdir), "dropped.conf", "--", ".env.secrets", "--",
            "sh", "-c", 'cat "$0/pending" "$1/.env.secrets" "$1/conf/app.yml"; exit 3', str(releases), str(stackdir)]
    done = _run(argv)
    assert done.returncode == 3, done.stderr  # the command's own status
    assert done.stdout == b'{"release": "x"}\nA=\'1\'\nv: 2\n'
    assert stat.S_IMODE((stackdir / ".env.secrets").stat().st_mode) == 0o600
    assert (stackdir / "same.conf").stat().st_ino == inode  # unchanged: running mounts see the same file
    assert (stackdir / "data" / "db.sqlite").read_bytes() == b"precious"
    found = sorted(str(p.relative_to(stackdir)) for p in stackdir.rglob("*") if p.is_file())
    assert found == [".env.secrets", "compose.yaml", "conf/app.yml", "data/db.sqlite", "same.conf"]


def test_start_release_stops_with_95_when_a_folder_holds_a_file_s_place(tmp_path):
    releases, stackdir = _release_with_files(tmp_path)
    (stackdir / "conf" / "app.yml").mkdir(parents=True)
    (stackdir / "conf" / "app.yml" / "keep").write_text("user data")
    argv = ["sh", "-c", START, "start-release", str(releases), "{}", str(releases / REL), str(stackdir),
            "--", "--", "touch", str(tmp_path / "ran")]
    done = _run(argv)
    assert done.returncode == 95
    assert b"is a folder" in done.stderr
    assert not (tmp_path / "ran").exists()


def test_start_release_stops_with_96_when_an_env_file_is_missing(tmp_path):
    releases = tmp_path / "releases" / "media"
    (releases / REL).mkdir(parents=True)
    argv = ["sh", "-c", START, "start-release", str(releases), "{}", str(releases / REL),
            str(tmp_path / "stack"), "--", ".env.secrets", "--", "touch", str(tmp_path / "ran")]
    assert _run(argv).returncode == 96
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(("restored", "current"), [("OLD", "OLD\n"), (None, None)])
def test_settle_rollback_moves_current_marks_and_clears(tmp_path, restored, current):
    releases = tmp_path / "releases" / "media"
    (releases / NEW).mkdir(parents=True)
    (releases / NEW / "release.json").write_bytes(_record(NEW))
    (releases / "current").write_text(NEW + "\n")
    (releases / "pending").write_text("{}")
    done = _run(settle_rollback(str(tmp_path), "media", restored, NEW))
    assert done.returncode == 0, done.stderr
    assert ((releases / "current").read_text() if (releases / "current").exists() else None) == current
    assert json.loads((releases / NEW / "release.json").read_text())["status"] == "rolled-back"
    assert not (releases / "pending").exists()


def test_restore_release_retags_then_runs_and_reports_a_missing_image(fake_bin, tmp_path):
    log = tmp_path / "log"
    env = fake_bin("docker", f'echo "$*" >> {log}; [ "$3" = gone:1 ] && exit 1; exit 0\n')
    argv = restore_release(".homelab", "media", REL, {"a:1": "sha256:aa"}, LEGACY)
    done = _run(argv, env=env)
    assert done.returncode == 0, done.stderr
    lines = log.read_text().splitlines()
    assert lines[0] == "tag sha256:aa a:1"
    assert lines[1].startswith("compose -p media ")
    missing = _run(restore_release(".homelab", "media", REL, {"gone:1": "sha256:00"}, LEGACY), env=env)
    assert missing.returncode == 98


def test_pull_images_pulls_each_reference_and_stops_at_the_first_failure(fake_bin, tmp_path):
    log = tmp_path / "log"
    env = fake_bin("docker", f'echo "$*" >> {log}; [ "$4" = bad:1 ] && exit 1; exit 0\n')
    assert _run(pull_images(["a:1", "b:2"]), env=env).returncode == 0
    assert log.read_text().splitlines() == ["pull -q -- a:1", "pull -q -- b:2"]
    log.unlink()
    assert _run(pull_images(["bad:1", "c:3"]), env=env).returncode == 1
    assert log.read_text().splitlines() == ["pull -q -- bad:1"]


def test_hook_commands_exec_or_run_under_a_timeout():
    from model.inventory import Hook
    from tasks.host_commands.hooks import hook_command

    exec_hook = hook_command(LEGACY, Hook(service="db", run="pg_dump > /backup/db.sql", timeout_s=60))
    assert exec_hook == ["timeout", "60", *LEGACY.argv("exec", "-T", "db", "sh", "-c", "pg_dump > /backup/db.sql")]
    run_hook = hook_command(LEGACY, Hook(service="db", run="migrate up", mode="run", timeout_s=0.2))
    assert run_hook == ["timeout", "1", *LEGACY.argv("run", "--rm", "--no-deps", "-T", "--entrypoint", "sh", "db",
                                                     "-c", "migrate up")]

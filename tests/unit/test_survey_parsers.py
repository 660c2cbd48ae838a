"""Host facts: the survey parsers on recorded output (full, failed, cut off, garbled, empty)."""

from __future__ import annotations

import json
import subprocess

import pytest
from unitsupport import DATA, make_gpu

from model.releases import ReleaseRecord, new_release_id
from tasks.host_commands.containers import Container, judge_project, parse_containers
from tasks.host_commands.gpu import Gpu, GpuProcess, parse_gpu_processes, parse_nvidia_smi
from tasks.host_commands.sections import split_sections
from tasks.host_commands.survey import parse_df, parse_releases, parse_survey, survey

FULL = (DATA / "survey_rtx1080.txt").read_text()
INSPECT = (DATA / "podman_inspect.json").read_text()


# ---------------------------------------------------------------------------------------------
# the whole survey
# ---------------------------------------------------------------------------------------------


def test_full_survey_sample():
    s = parse_survey(FULL)
    assert (s.engine_ok, s.engine_error) == (True, None)
    assert (s.disk_free_mb, s.disk_error) == (36137892 // 1024, None)
    assert sorted(s.releases) == ["media", "newsletter"]
    news = s.releases["newsletter"]
    assert (news.id, news.stack, news.host, news.status) == ("20260201T120000Z-a1b2c3", "newsletter", "rtx1080",
                                                             "active")
    assert news.config_hash == "sha256:" + "ab" * 32
    assert news.images == {"localhost/lab-web:2": "sha256:" + "9b" * 32}
    assert s.broken_releases == {"redis": "release 20260130T000000Z-ffffff: unreadable record (JSONDecodeError)"}
    assert [c.name for c in s.containers] == ["newsletter-web-1", "authentik-worker-1", "media-web-1", "redis-web-1"]
    assert [c.name for c in s.project("newsletter")] == ["newsletter-web-1"]
    assert s.gpus == (make_gpu(0, "NVIDIA GeForce GTX 1080", 8192, 1234, 17),)
    assert s.gpu_error is None
    assert s.complete is True


def test_engine_failure_is_reported_and_containers_are_not_trusted():
    text = FULL.replace("\n@@homelab:engine\n5.0.3\n",
                        "\n@@homelab:engine\nCannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                        "Is the docker daemon running?\n@@failed 1\n")
    s = parse_survey(text)
    assert not s.engine_ok
    assert s.engine_error == ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                              "Is the docker daemon running?")
    assert s.containers == ()
    assert s.disk_free_mb == 35290 and s.complete


def test_engine_failure_without_a_message():
    s = parse_survey("\n@@homelab:engine\n@@failed 127\n@@homelab:end\n")
    assert not s.engine_ok
    assert s.engine_error == "no answer from `docker ps`"


def test_truncated_survey_is_incomplete():
    cut = FULL[: FULL.index("@@homelab:containers") + 200]  # cut off inside the containers JSON
    s = parse_survey(cut)
    assert s.complete is False
    assert s.engine_ok
    assert s.containers == ()
    assert s.gpus == () and s.gpu_error is None


def test_empty_survey():
    s = parse_survey("")
    assert s.complete is False
    assert not s.engine_ok and s.engine_error == "no answer from `docker ps`"
    assert s.disk_free_mb is None and s.disk_error == "no output from df"
    assert s.releases == {} and s.broken_releases == {} and s.containers == ()
    assert s.gpus == () and s.gpu_error is None


def test_garbled_survey_without_any_section():
    s = parse_survey("bash: line 1: syntax error near unexpected token `('\n\x00\xff garbage")
    assert s.complete is False
    assert not s.engine_ok
    assert s.disk_free_mb is None


def test_garbled_containers_json_yields_no_containers():
    text = FULL.replace('"Id": "3f1c', '"Id" "3f1c', 1)
    s = parse_survey(text)
    assert s.containers == ()
    assert s.engine_ok and s.complete


def test_split_sections():
    assert split_sections("noise\n@@homelab:a\n1\n\n2\n@@homelab: b \nx\n@@homelab:end\n") == {
        "a": "1\n\n2", "b": "x", "end": ""}


# ---------------------------------------------------------------------------------------------
# the survey script, run locally with a fake docker and nvidia-smi
# ---------------------------------------------------------------------------------------------

FAKE_DOCKER = """
case "$1" in
  ps) [ -n "$ENGINE_DOWN" ] && { echo "Cannot connect to the Docker daemon" >&2; exit 1; }
      echo 3f1c9a7e2b4d; echo 7aa0c0ffee00 ;;
  inspect) cat "$INSPECT_JSON" ;;
  *) exit 99 ;;
esac
"""
FAKE_NVIDIA_SMI = 'echo "0, NVIDIA GeForce GTX 1080, 8192, [N/A], 3"\n'


def _record(stack: str) -> ReleaseRecord:
    return ReleaseRecord(id=new_release_id(), stack=stack, host="rtx1080", commit=None, config_hash="sha256:x",
                         images={}, created_at="2026-02-01T12:00:00+00:00", flow_run_id=None)


@pytest.mark.parametrize("gpu", [True, False])
def test_survey_script_output_round_trips_through_the_parser(fake_bin, tmp_path, gpu):
    fake_bin("docker", FAKE_DOCKER)
    env = fake_bin("nvidia-smi", FAKE_NVIDIA_SMI)
    state = tmp_path / "state dir"
    record = _record("media")
    release = state / "releases" / "media" / record.id
    release.mkdir(parents=True)
    (release / "release.json").write_bytes(record.to_json())
    (release.parent / "current").write_text(record.id + "\n")
    (state / "releases" / "empty").mkdir()  # a stack directory without a current pointer is skipped

    done = subprocess.run(survey(str(state), gpu), env={**env, "INSPECT_JSON": str(DATA / "podman_inspect.json")},
                          capture_output=True, text=True, check=True, cwd=tmp_path)
    s = parse_survey(done.stdout)
    assert s.complete and s.engine_ok
    assert s.disk_error is None and s.disk_free_mb is not None and s.disk_free_mb >= 0
    assert s.releases == {"media": record}
    assert s.broken_releases == {}
    assert len(s.containers) == 4
    assert s.gpus == ((make_gpu(0, "NVIDIA GeForce GTX 1080", 8192, -1, 3),) if gpu else ())


def test_survey_keeps_the_containers_docker_found_when_one_vanished(fake_bin, tmp_path):
    vanished = FAKE_DOCKER.replace('inspect) cat "$INSPECT_JSON" ;;',
                                   'inspect) cat "$INSPECT_JSON"; echo "Error: No such object: 7aa0" >&2; exit 1 ;;')
    env = fake_bin("docker", vanished)
    done = subprocess.run(survey(str(tmp_path / "state"), False),
                          env={**env, "INSPECT_JSON": str(DATA / "podman_inspect.json")},
                          capture_output=True, text=True, check=True, cwd=tmp_path)
    assert len(parse_survey(done.stdout).containers) == 4


def test_survey_script_with_the_engine_down(fake_bin, tmp_path):
    env = fake_bin("docker", FAKE_DOCKER)
    done = subprocess.run(survey(str(tmp_path / "state"), False), env={**env, "ENGINE_DOWN": "1"},
                          capture_output=True, text=True, check=True, cwd=tmp_path)
    s = parse_survey(done.stdout)
    assert s.complete
    assert s.engine_error == "Cannot connect to the Docker daemon"
    assert s.containers == ()


# ---------------------------------------------------------------------------------------------
# containers
# ---------------------------------------------------------------------------------------------


def test_podman_inspect_sample():
    web, worker, media, redis = parse_containers(INSPECT)
    assert web == Container(
        id="3f1c9a7e2b4d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8", name="newsletter-web-1",
        project="newsletter", service="web", image="localhost/lab-web:2",
        image_id="sha256:9b2f6e0c1d3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c",
        state="running", health="healthy", exit_code=0, health_output="ok")
    assert web.ok
    assert (worker.state, worker.health, worker.exit_code, worker.ok) == ("exited", "none", 137, False)
    assert (media.health, media.health_output, media.ok) == ("unhealthy", "GET /health: 503 Service Unavailable",
                                                             False)
    assert (redis.project, redis.service, redis.health, redis.ok) == ("", "", "none", True)


@pytest.mark.parametrize("text", ["", "[]", "{}", "null", "[{", "not json at all", '{"Id": "x"}'])
def test_containers_from_empty_or_garbled_json(text):
    assert parse_containers(text) == ()


def test_container_with_nothing_but_an_id():
    (c,) = parse_containers('[{"Id": "abc"}]')
    assert (c.id, c.name, c.state, c.health, c.ok) == ("abc", "", "unknown", "none", False)


# ---------------------------------------------------------------------------------------------
# df
# ---------------------------------------------------------------------------------------------

DF_HEADER = "Filesystem     1024-blocks     Used Available Capacity Mounted on\n"
DF_CASES = [
    ("ext4", DF_HEADER + "/dev/sda1  102626232 61229072  36137892      63% /", (35290, None)),
    ("under 1 MiB", DF_HEADER + "tmpfs 1024 1000 1000 99% /run", (0, None)),
    ("mkdir noise before", "mkdir: created directory '/root/.homelab'\n" + DF_HEADER +
     "overlay 1000000 0 1048576 0% /", (1024, None)),
    ("df failed", "df: /root/.homelab: No such file or directory\n@@failed 1",
     (None, "df: /root/.homelab: No such file or directory")),
    ("failed silently", "@@failed 1", (None, "no output from df")),
    ("empty", "", (None, "no output from df")),
    ("header only", DF_HEADER.strip(), (None, "unexpected df output: ")),
    ("garbled", "\x00\x01 garbage", (None, "unexpected df output: ")),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in DF_CASES], ids=[c[0] for c in DF_CASES])
def test_parse_df(text, expected):
    free, error = parse_df(text)
    assert free == expected[0]
    if expected[1] is None:
        assert error is None
    else:
        assert error is not None and error.startswith(expected[1])


# ---------------------------------------------------------------------------------------------
# nvidia-smi
# ---------------------------------------------------------------------------------------------

SMI_CASES = [
    ("one GPU", "0, NVIDIA GeForce GTX 1080, 8192, 1234, 17", (make_gpu(0, "NVIDIA GeForce GTX 1080", 8192, 1234, 17),),
     None),
    ("two GPUs", "0, NVIDIA A100-SXM4-40GB, 40960, 0, 0\n1, NVIDIA A100-SXM4-40GB, 40960, 39000.0, 100",
     (make_gpu(0, "NVIDIA A100-SXM4-40GB", 40960, 0, 0), make_gpu(1, "NVIDIA A100-SXM4-40GB", 40960, 39000, 100)),
     None),
    ("N/A fields", "0, NVIDIA GeForce GTX 1080, [N/A], [N/A], [Not Supported]",
     (make_gpu(0, "NVIDIA GeForce GTX 1080", -1, -1, -1),), None),
    ("not a GPU host", "", (), None),
    ("driver missing", "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n@@failed 9",
     (), "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."),
    ("not installed", "sh: 1: nvidia-smi: not found\n@@failed 127", (), "sh: 1: nvidia-smi: not found"),
    ("failed silently", "@@failed 6", (), "nvidia-smi failed"),
    ("wrong field count", "0, GTX 1080, 8192", (), "unexpected nvidia-smi output: '0, GTX 1080, 8192'"),
    ("with a header line", "index, name, memory.total [MiB], memory.used [MiB], utilization.gpu [%]\n"
     "0, GTX 1080, 8192, 1, 2", (make_gpu(0, "GTX 1080", 8192, 1, 2),), None),
    ("the survey's query, columns by name",
     "index, uuid, name, driver_version, memory.total [MiB], memory.used [MiB], utilization.gpu [%]\n"
     "0, GPU-4f3a, NVIDIA GeForce GTX 1080, 535.183.01, 8192, 7900, 97",
     (Gpu(index=0, name="NVIDIA GeForce GTX 1080", memory_total_mb=8192, memory_used_mb=7900, utilization_pct=97,
          driver_version="535.183.01", uuid="GPU-4f3a"),), None),
    ("a header without the memory", "index, name\n0, GTX 1080", (), "unexpected nvidia-smi output: no column"),
    ("garbled number", "0, GTX 1080, lots, 1, 2", (), "unexpected nvidia-smi output"),
]


@pytest.mark.parametrize(("text", "processes"), [
    ("gpu_uuid, pid, process_name, used_gpu_memory [MiB]\nGPU-4f3a, 4242, /usr/bin/ollama, 6900\n"
     "GPU-4f3a, 77, python3, [N/A]",
     (GpuProcess(gpu_uuid="GPU-4f3a", pid=4242, name="/usr/bin/ollama", used_memory_mb=6900),
      GpuProcess(gpu_uuid="GPU-4f3a", pid=77, name="python3", used_memory_mb=-1))),
    ("gpu_uuid, pid, process_name, used_memory [MiB]", ()),  # nothing runs: the header alone
    ("No running processes found", ()),
    ("", ()),
    ("gpu_uuid, pid, process_name, used_memory [MiB]\nGPU-1, not-a-pid, x, 1\nGPU-1, 5", ()),  # skipped, not raised
])
def test_parse_gpu_processes(text, processes):
    assert parse_gpu_processes(text) == processes


@pytest.mark.parametrize(("text", "gpus", "error"), [c[1:] for c in SMI_CASES], ids=[c[0] for c in SMI_CASES])
def test_parse_nvidia_smi(text, gpus, error):
    got_gpus, got_error = parse_nvidia_smi(text)
    assert got_gpus == gpus
    if error is None:
        assert got_error is None
    else:
        assert got_error is not None and got_error.startswith(error)


# ---------------------------------------------------------------------------------------------
# release records
# ---------------------------------------------------------------------------------------------


def _json(**overrides) -> str:
    record = {"id": "20260201T120000Z-a1b2c3", "stack": "media", "host": "rtx1080", "commit": None,
              "config_hash": "sha256:1", "images": {}, "created_at": "2026-02-01T12:00:00+00:00",
              "flow_run_id": None} | overrides
    return json.dumps(record, indent=1)


RELEASE_CASES = [
    ("empty", "", [], {}),
    ("one record", f"@@release media 20260201T120000Z-a1b2c3\n{_json()}\n", ["media"], {}),
    ("unknown fields are ignored", f"@@release media r1\n{_json(future_field=1)}\n", ["media"], {}),
    ("missing record file", "@@release media 20260201T120000Z-a1b2c3\n\n", [],
     {"media": "release 20260201T120000Z-a1b2c3: unreadable record (JSONDecodeError)"}),
    ("truncated JSON", "@@release media r1\n{\n \"id\": \"r1\",\n", [],
     {"media": "release r1: unreadable record (JSONDecodeError)"}),
    ("record lacks fields", '@@release media r1\n{"id": "r1"}\n', [],
     {"media": "release r1: unreadable record (TypeError)"}),
    ("record is a list", "@@release media r1\n[1, 2]\n", [], {"media": "release r1: unreadable record (TypeError)"}),
    ("good and broken", f"@@release media r1\n{_json()}\n@@release redis r2\nnot json\n", ["media"],
     {"redis": "release r2: unreadable record (JSONDecodeError)"}),
    ("bad header is skipped", f"@@release media\n{_json()}\n", [], {}),
]


@pytest.mark.parametrize(("text", "good", "broken"), [c[1:] for c in RELEASE_CASES],
                         ids=[c[0] for c in RELEASE_CASES])
def test_parse_releases(text, good, broken):
    releases, got_broken = parse_releases(text)
    assert sorted(releases) == good
    assert got_broken == broken


def test_release_record_json_round_trip():
    record = ReleaseRecord(id="r1", stack="media", host="rtx1080", commit="abc+dirty", config_hash="sha256:1",
                           images={"a:1": "sha256:2"}, created_at="t", flow_run_id="f", status="failed",
                           source="homelab.yaml@v2", extra={"note": "x"})
    assert ReleaseRecord.from_json(record.to_json().decode()) == record
    assert json.loads(record.to_json())["status"] == "failed"


def test_new_release_ids_sort_by_time():
    from datetime import UTC, datetime

    early = new_release_id(datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC))
    late = new_release_id(datetime(2026, 11, 26, 23, 30, 0, tzinfo=UTC))
    assert early.startswith("20260101T000000Z-") and len(early) == len("20260101T000000Z-") + 6
    assert late.startswith("20261126T233000Z-")
    assert sorted([late, early]) == [early, late]


# ---------------------------------------------------------------------------------------------
# judging a project's containers
# ---------------------------------------------------------------------------------------------


def _c(service: str, state: str = "running", health: str = "none", exit_code: int = 0, output: str = "") -> Container:
    return Container(id=service, name=f"media-{service}-1", project="media", service=service, image="i",
                     image_id="sha256:i", state=state, health=health, exit_code=exit_code, health_output=output)


JUDGE_CASES = [
    ("all running, no healthcheck", ("web",), [_c("web")], True, (True, True, "all containers running and healthy")),
    ("all healthy", ("web", "db"), [_c("web", health="healthy"), _c("db", health="healthy")], True,
     (True, True, "all containers running and healthy")),
    ("extra containers are ignored", ("web",), [_c("web"), _c("old", state="exited")], True,
     (True, True, "all containers running")),
    ("no containers", ("web", "db"), [], True, (False, False, "no container for service(s) web, db")),
    ("one missing", ("web", "db"), [_c("web")], True, (False, False, "no container for service(s) db")),
    ("exited", ("web",), [_c("web", state="exited", exit_code=1)], True,
     (False, True, "media-web-1 exited (exit code 1)")),
    ("dead", ("web",), [_c("web", state="dead", exit_code=137)], True,
     (False, True, "media-web-1 dead (exit code 137)")),
    ("restarting", ("web",), [_c("web", state="restarting")], True, (False, False, "media-web-1 is restarting")),
    ("created", ("web",), [_c("web", state="created")], True, (False, False, "media-web-1 is created")),
    ("unhealthy with output", ("web",), [_c("web", health="unhealthy", output="503")], True,
     (False, True, "media-web-1 is unhealthy: 503")),
    ("unhealthy without output", ("web",), [_c("web", health="unhealthy")], True,
     (False, True, "media-web-1 is unhealthy")),
    ("starting", ("web",), [_c("web", health="starting")], True, (False, False, "media-web-1 health is starting")),
    ("unhealthy but health not required", ("web",), [_c("web", health="unhealthy")], False,
     (True, True, "all containers running")),
    ("exited even when health not required", ("web",), [_c("web", state="exited")], False,
     (False, True, "exited")),
]


@pytest.mark.parametrize(("services", "containers", "require_health", "expected"), [c[1:] for c in JUDGE_CASES],
                         ids=[c[0] for c in JUDGE_CASES])
def test_judge_project(services, containers, require_health, expected):
    judged = judge_project(services, tuple(containers), require_health)
    assert (judged.ok, judged.final) == expected[:2]
    assert expected[2] in judged.reason
    assert judged.containers == tuple(containers)


def test_refresh_images_reads_ids_and_pull_failures_from_a_real_sh(fake_bin):
    import subprocess

    from tasks.host_commands.image_refresh import RefreshedImage, parse_refresh, refresh_images

    env = fake_bin("docker", """
        case "$1 $4" in
          "pull ok:1") exit 0 ;;
          "pull local:1"|"pull gone:1") echo "Trying to pull..." >&2; echo "connection refused" >&2; exit 125 ;;
        esac
        [ "$6" = gone:1 ] && exit 1
        echo "sha256:id-of-$6"
        """)
    done = subprocess.run(refresh_images(["ok:1", "local:1", "gone:1"]), capture_output=True, text=True, env=env,
                          check=True)
    assert parse_refresh(done.stdout) == {
        "ok:1": RefreshedImage("sha256:id-of-ok:1"),
        "local:1": RefreshedImage("sha256:id-of-local:1", "connection refused"),
        "gone:1": RefreshedImage(None, "connection refused"),
    }

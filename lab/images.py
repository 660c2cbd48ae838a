"""Lab container images, made without a registry and without a build engine.

Each image is FROM scratch: busybox-static plus applet symlinks (httpd and wget are enough for
an HTTP service with a healthcheck). Rather than `podman build`, this module writes the
docker-archive (what `podman save --format docker-archive` produces) itself: one shared
layer tar and one Docker image config per tag. That makes image IDs reproducible (podman's
docker-format builds embed a random build-container ID and hostname), keeps HEALTHCHECK
(Docker config), and runs no podman in the root namespace at all. The archive is loaded into a
host with `podman load` only when the host's copy is missing or has another ID.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import tarfile
from pathlib import Path
from typing import Any

from lab.osutil import LabError, run, say
from lab.topology import LAB_DIR

BUSYBOX = Path("/bin/busybox")
# Fixed creation time (2025-01-01) for every file and config: reproducible IDs.
BUILD_TIME = 1735689600
CREATED = "2025-01-01T00:00:00Z"

WEB_SH = r"""#!/bin/sh
# lab-web: a tiny HTTP service. GET /health -> "ok <version>", GET / -> "lab-web <version> <stack>".
: "${PORT:=8080}"
mkdir -p /tmp/www
printf 'lab-web %s %s' "$VERSION" "${STACK:-}" >/tmp/www/index.html
if [ "$VERSION" = broken ]; then
  echo "lab-web broken: refusing to become healthy"
else
  printf 'ok %s' "$VERSION" >/tmp/www/health
fi
echo "lab-web $VERSION serving on port $PORT"
exec httpd -f -p "$PORT" -h /tmp/www
"""

WORKER_SH = r"""#!/bin/sh
# lab-worker: no healthcheck, just a heartbeat in the logs.
echo "lab-worker $VERSION starting"
while :; do
  echo "lab-worker $VERSION heartbeat $(date +%H:%M:%S)"
  sleep 5
done
"""

SECOND = 1_000_000_000  # Docker durations are in nanoseconds
WEB_HEALTHCHECK = {
    "Test": ["CMD-SHELL", 'wget -q -O /dev/null "http://127.0.0.1:${PORT:-8080}/health" || exit 1'],
    "Interval": 1 * SECOND,
    "Timeout": 2 * SECOND,
    "Retries": 2,
}


def _config(kind: str, version: str) -> dict[str, Any]:
    """Docker container config of one image (what `docker inspect .Config` shows)."""
    config: dict[str, Any] = {
        "Env": ["PATH=/bin", f"VERSION={version}"],
        "Labels": {"org.homelab.lab.image": kind, "org.homelab.lab.version": version},
        "WorkingDir": "/",
    }
    if kind == "lab-web":
        config["Env"].append("PORT=8080")
        config["Healthcheck"] = WEB_HEALTHCHECK
        config["Cmd"] = ["/bin/sh", "/lab/web.sh"]
    else:
        config["Cmd"] = ["/bin/sh", "/lab/worker.sh"]
    return config


# tag -> image config. Versions 1 and 2 differ in their config (VERSION), hence in their IDs.
IMAGES: dict[str, dict[str, Any]] = {
    "localhost/lab-web:1": _config("lab-web", "1"),
    "localhost/lab-web:2": _config("lab-web", "2"),
    "localhost/lab-web:broken": _config("lab-web", "broken"),
    "localhost/lab-worker:1": _config("lab-worker", "1"),
}


def images_dir() -> Path:
    return LAB_DIR / "images"


def tarball_path() -> Path:
    return images_dir() / "lab-images.tar"


def _ids_path() -> Path:
    return images_dir() / "ids.json"


def _add(tar: tarfile.TarFile, name: str, *, mode: int, data: bytes | None = None, link: str | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.mtime, info.mode, info.uid, info.gid = BUILD_TIME, mode, 0, 0
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
    elif data is None:
        info.type = tarfile.DIRTYPE
    else:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _layer() -> bytes:
    """The one root filesystem layer all lab images share, byte-for-byte reproducible."""
    busybox = BUSYBOX.read_bytes()
    applets = sorted(set(run([str(BUSYBOX), "--list"]).stdout.decode().split()) - {"busybox"})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        _add(tar, "bin", mode=0o755)
        _add(tar, "bin/busybox", mode=0o755, data=busybox)
        for applet in applets:
            _add(tar, f"bin/{applet}", mode=0o777, link="busybox")
        _add(tar, "etc", mode=0o755)
        _add(tar, "etc/group", mode=0o644, data=b"root:x:0:\n")
        _add(tar, "etc/passwd", mode=0o644, data=b"root:x:0:0:root:/root:/bin/sh\n")
        _add(tar, "lab", mode=0o755)
        _add(tar, "lab/web.sh", mode=0o755, data=WEB_SH.encode())
        _add(tar, "lab/worker.sh", mode=0o755, data=WORKER_SH.encode())
        _add(tar, "root", mode=0o700)
        _add(tar, "tmp", mode=0o1777)
    return buf.getvalue()


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _image_config(config: dict[str, Any], diff_id: str) -> bytes:
    image = {
        "architecture": _arch(),
        "os": "linux",
        "created": CREATED,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": CREATED, "created_by": "lab/images.py: busybox-static rootfs"}],
    }
    return json.dumps(image, sort_keys=True, separators=(",", ":")).encode()


def _write_archive(path: Path) -> dict[str, str]:
    """Write a multi-image docker-archive; returns {tag: image id}."""
    layer = _layer()
    layer_hex = hashlib.sha256(layer).hexdigest()
    ids, manifest = {}, []
    blobs: dict[str, bytes] = {f"{layer_hex}.tar": layer}
    for tag, config in IMAGES.items():
        blob = _image_config(config, f"sha256:{layer_hex}")
        ids[tag] = hashlib.sha256(blob).hexdigest()
        blobs[f"{ids[tag]}.json"] = blob
        manifest.append({"Config": f"{ids[tag]}.json", "RepoTags": [tag], "Layers": [f"{layer_hex}.tar"]})
    blobs["manifest.json"] = json.dumps(manifest).encode()
    tmp = path.with_suffix(".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in blobs.items():
            _add(tar, name, mode=0o644, data=data)
    tmp.replace(path)
    return ids


def _stamp() -> str:
    """Hash of what the images are made from: rewrite the archive only when it changes."""
    h = hashlib.sha256(json.dumps([WEB_SH, WORKER_SH, IMAGES, _arch()], sort_keys=True).encode())
    h.update(hashlib.sha256(BUSYBOX.read_bytes()).digest())
    return h.hexdigest()


def ensure_built() -> dict[str, str]:
    """Write the image archive if its inputs changed; return {tag: image id}."""
    if not BUSYBOX.exists():
        raise LabError(f"{BUSYBOX} is missing: install busybox-static (scripts/setup.sh)")
    stamp, stamp_file = _stamp(), images_dir() / "stamp"
    built = tarball_path().exists() and _ids_path().exists() and stamp_file.exists()
    if built and stamp_file.read_text() == stamp:
        return json.loads(_ids_path().read_text())
    say("writing lab images")
    images_dir().mkdir(parents=True, exist_ok=True)
    ids = _write_archive(tarball_path())
    _ids_path().write_text(json.dumps(ids, indent=1) + "\n")
    stamp_file.write_text(stamp)
    return ids


def list_images_argv() -> list[str]:
    """Command (run inside a host) that prints `<repo:tag> <id>` per image."""
    return ["podman", "images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]


def missing_images(listing: str, ids: dict[str, str]) -> list[str]:
    """Tags whose image is absent from a host's listing or has another ID."""
    have = {}
    for line in listing.splitlines():
        tag, _, image_id = line.partition(" ")
        have[tag] = image_id.removeprefix("sha256:")
    return [tag for tag, image_id in ids.items() if have.get(tag) != image_id]


def load_argv() -> list[str]:
    return ["podman", "load", "-q", "-i", str(tarball_path())]

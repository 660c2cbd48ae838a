"""A stack as compose understands it: the normalized model from ``docker compose config``.

Images, services and the files each service mounts are read from the normalized model, so
``include:``, ``extends:``, overrides, profiles, anchors and ``${VAR:-default}`` are seen as
compose sees them. Compose runs locally on a copy of exactly the files that ship, with a
fixed, minimal environment; the result is cached by the content hash of its inputs, so a
no-op run never starts compose. Without a local compose v2 the raw YAML is read instead
(one file's ``services:`` only; every service counts as mounting every file).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from model.errors import InventoryError
from model.stack_files import StackFiles
from model.yamlpos import YamlDocument, YamlSyntaxError, format_path, load_with_lines

PROJECT_DIR = "${HOMELAB_PROJECT_DIR}"  # stands in for the project directory in the model
INVENTORY_ENV_FILE = "homelab.env"  # the inventory's `env:`, next to the release's files
COMPOSE_TIMEOUT_S = 60
NO_IMAGE = "every service needs an image (build images in CI and reference them here)"
BUILD_HINT = ("the orchestrator never builds on a host: build the image in CI, push it, and name it "
              "in `image:`; with an `image:`, `build:` is ignored and that image is deployed")


@dataclass(frozen=True, kw_only=True)
class ComposeInput:
    """Everything ``docker compose config`` reads for one stack on one host."""

    project: str
    files: StackFiles
    compose_files: tuple[str, ...]
    profiles: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    placeholder_env_files: tuple[str, ...] = ()  # rendered from Vault at deploy time; empty here
    shown: str = ""  # the stack folder, as users name it
    ref: str = ""  # the git ref the files were read at, if any

    def where(self, name: str) -> str:
        """A stack file as messages name it: ``stacks/web/compose.yaml@v2``."""
        return f"{self.shown}/{name}" + (f"@{self.ref}" if self.ref else "")

    def key(self) -> str:
        payload = {"project": self.project, "files": self.files.manifest(), "compose": self.compose_files,
                   "profiles": self.profiles, "env": dict(sorted(self.env.items())),
                   "placeholders": self.placeholder_env_files}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def env_file_args(self, project_dir: str, release_dir: str) -> list[str]:
        args = env_file_args(self.files.get(".env") is not None, bool(self.env), project_dir, release_dir)
        return [part for path in args for part in ("--env-file", path)]


def env_file_args(has_dot_env: bool, has_inventory_env: bool, project_dir: str, release_dir: str) -> list[str]:
    """The ``--env-file`` paths: the stack's ``.env`` then the inventory's variables (which
    win). None without inventory variables: compose then reads ``.env`` by itself."""
    if not has_inventory_env:
        return []
    return [*([f"{project_dir}/.env"] if has_dot_env else []), f"{release_dir}/{INVENTORY_ENV_FILE}"]


def inventory_env_text(env: Mapping[str, str]) -> bytes:
    return "".join(f"{key}={_quote_env(value)}\n" for key, value in sorted(env.items())).encode()


def _quote_env(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'" if re.search(r"[\s#'\"$\\]", value) else value


@dataclass(frozen=True, kw_only=True)
class ComposeModel:
    images: dict[str, str]  # service -> image reference
    mounts: dict[str, tuple[str, ...]]  # service -> stack-relative paths it bind-mounts ("" = all)
    digest: str  # of the normalized model


def load_compose_model(spec: ComposeInput, cache_dir: Path | None = None) -> ComposeModel:
    """Validate the raw files (with lines), then read the normalized model (cached)."""
    documents = {name: _raw_document(spec, name) for name in spec.compose_files}
    cache = (cache_dir or default_cache_dir()) / f"{spec.key()}.json"
    text = _read_cache(cache)
    if text is None:
        text = _run_compose_config(spec, documents)
        if text is None:
            return _raw_model(spec, documents)
        _write_cache(cache, text)
    model = json.loads(text)
    return _model_from(model, spec, documents)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "homelab" / "compose"


def _read_cache(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def _write_cache(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)
    except OSError:
        pass  # a cache that cannot be written only costs time


def _raw_document(spec: ComposeInput, name: str) -> YamlDocument:
    shown = spec.where(name)
    item = spec.files.get(name)
    if item is None:
        raise InventoryError([f"{shown}: the compose file is not shipped (excluded by `files:`, `exclude:` "
                              "or .homelabignore)"])
    try:
        doc = load_with_lines(item.data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InventoryError([f"{shown}: not UTF-8 text (byte {exc.start})"]) from exc
    except YamlSyntaxError as exc:
        raise InventoryError([f"{shown}:{exc.line or 1}: {exc}"]) from exc
    if doc.duplicates:
        raise InventoryError([f"{shown}:{line}: {format_path(path)}: duplicate key" for path, line in doc.duplicates])
    data = doc.data
    if name == spec.compose_files[0] and not (isinstance(data, dict) and (data.get("services") or data.get("include"))):
        raise InventoryError([f"{shown}:1: services: a compose file needs a non-empty `services` mapping"])
    if data is not None and not isinstance(data, dict):
        raise InventoryError([f"{shown}:1: a compose file must be a mapping"])
    return doc


def compose_available() -> bool:
    return shutil.which("docker") is not None


def _run_compose_config(spec: ComposeInput, documents: dict[str, YamlDocument]) -> str | None:
    """The normalized model as JSON text with the project directory replaced by
    ``PROJECT_DIR``, or None when no compose v2 is installed here."""
    if not compose_available():
        return None
    with tempfile.TemporaryDirectory(prefix="homelab-compose-") as scratch:
        project_dir = Path(scratch) / "project"
        for item in spec.files.files:
            target = project_dir / item.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(item.data)
        for name in spec.placeholder_env_files:
            if not (project_dir / name).exists():
                (project_dir / name).write_text("")
        if spec.env:
            (Path(scratch) / INVENTORY_ENV_FILE).write_bytes(inventory_env_text(spec.env))
        argv = ["docker", "compose", "-p", spec.project, "--project-directory", str(project_dir),
                *spec.env_file_args(str(project_dir), scratch)]
        for name in spec.compose_files:
            argv += ["-f", str(project_dir / name)]
        for profile in spec.profiles:
            argv += ["--profile", profile]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": scratch,
               "DOCKER_CONFIG": os.environ.get("DOCKER_CONFIG", str(Path.home() / ".docker"))}
        try:
            done = subprocess.run([*argv, "config", "--format", "json"], capture_output=True, text=True,
                                  env=env, timeout=COMPOSE_TIMEOUT_S, cwd=scratch)
        except FileNotFoundError:
            return None
        except subprocess.TimeoutExpired as exc:
            main = spec.where(spec.compose_files[0])
            raise InventoryError([f"{main}: docker compose config took over {COMPOSE_TIMEOUT_S} s"]) from exc
        if done.returncode != 0 and "is not a docker command" in done.stderr:
            return None
        if done.returncode != 0:
            raise InventoryError([_compose_problem(spec, documents, done.stderr, str(project_dir), scratch)])
        return done.stdout.replace(str(project_dir), PROJECT_DIR).replace(scratch, PROJECT_DIR + "/..")


def _compose_problem(spec: ComposeInput, documents: dict[str, YamlDocument], stderr: str, project_dir: str,
                     scratch: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    message = (lines[-1] if lines else "failed").replace(project_dir + "/", "").replace(scratch + "/", "")
    message = message.replace(project_dir, ".")
    no_image = re.search(r'service "([^"]+)" has neither an image nor a build context', message)
    if no_image:
        file, line = _where_defined(no_image.group(1), spec, documents)
        return f"{file}:{line}: services.{no_image.group(1)}.image: {NO_IMAGE}"
    main = spec.where(spec.compose_files[0])
    line = re.search(r"\byaml: line (\d+):", message)
    where = f"{main}:{line.group(1)}" if line else main
    return f"{where}: docker compose config: {message}"


def _model_from(model: dict, spec: ComposeInput, documents: dict[str, YamlDocument]) -> ComposeModel:
    services = model.get("services") or {}
    main = spec.where(spec.compose_files[0])
    if not services:
        raise InventoryError([f"{main}:1: services: no service is enabled (check `profiles:`)"])
    images, problems = {}, []
    for name in _in_written_order(services, documents):
        service = services[name]
        image = service.get("image")
        if why := _not_an_operand(name, image):
            file, line = _where_defined(name, spec, documents)
            problems.append(f"{file}:{line}: services.{name}: {why}")
            continue
        if isinstance(image, str) and image:
            images[name] = image
            continue
        file, line = _where_defined(name, spec, documents)
        if service.get("build"):
            problems.append(f"{file}:{line}: services.{name}.image: every service needs an image; `build:` "
                            f"without `image:` is refused ({BUILD_HINT})")
        else:
            problems.append(f"{file}:{line}: services.{name}.image: {NO_IMAGE}")
    if problems:
        raise InventoryError(problems)
    digest = "sha256:" + hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()
    return ComposeModel(images=images, mounts=_mounts(model), digest=digest)


def _not_an_operand(service: object, image: object) -> str | None:
    """Why a service name or image reference cannot be passed to ``docker`` on a host (as
    ``docker pull -- IMAGE``, ``compose up -- SERVICE``), or None. Compose itself accepts
    ``-x`` for both."""
    for what, value in (("service name", service), ("image", image)):
        if not isinstance(value, str):
            continue
        if value.startswith("-"):
            return f"{what} {value!r} starts with `-`, which docker would read as an option"
        if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
            return f"{what} {value!r} contains a space or a control character"
    return None


def _in_written_order(services: dict, documents: dict[str, YamlDocument]) -> list[str]:
    """Services as the files list them (compose sorts them), then any from ``include:``."""
    written = [str(name) for doc in documents.values() if isinstance(doc.data, dict)
               for name in (doc.data.get("services") or {})]
    return [*(n for n in dict.fromkeys(written) if n in services), *sorted(n for n in services if n not in written)]


def _where_defined(service: str, spec: ComposeInput, documents: dict[str, YamlDocument]) -> tuple[str, int]:
    for name, doc in documents.items():
        if isinstance(doc.data, dict) and service in (doc.data.get("services") or {}):
            return spec.where(name), doc.line_of(("services", service)) or 1
    return spec.where(spec.compose_files[0]), 1


def _relative(source: object) -> str | None:
    prefix = PROJECT_DIR + "/"
    if isinstance(source, str) and (source == PROJECT_DIR or source.startswith(prefix)):
        return source.removeprefix(PROJECT_DIR).lstrip("/")
    return None


def _mounts(model: dict) -> dict[str, tuple[str, ...]]:
    """service -> the stack-relative paths it reads at start: bind mounts, ``configs:`` and
    ``secrets:`` files. A change to one of them takes a recreate to be seen."""
    top_files = {(kind, name): spec.get("file") for kind in ("configs", "secrets")
                 for name, spec in (model.get(kind) or {}).items() if isinstance(spec, dict)}
    found: dict[str, tuple[str, ...]] = {}
    for name, service in (model.get("services") or {}).items():
        paths = [_relative(v.get("source")) for v in service.get("volumes") or []
                 if isinstance(v, dict) and v.get("type") == "bind"]
        for kind in ("configs", "secrets"):
            for use in service.get(kind) or []:
                source = use.get("source") if isinstance(use, dict) else use
                paths.append(_relative(top_files.get((kind, source))))
        found[name] = tuple(sorted({p for p in paths if p is not None}))
    return found


def _raw_model(spec: ComposeInput, documents: dict[str, YamlDocument]) -> ComposeModel:
    """Without compose: services and images as written, merged over the files in order."""
    images: dict[str, str] = {}
    refused: list[str] = []
    for doc in documents.values():
        for name, service in ((doc.data or {}).get("services") or {}).items():
            if why := _not_an_operand(str(name), service.get("image") if isinstance(service, dict) else None):
                file, line = _where_defined(str(name), spec, documents)
                refused.append(f"{file}:{line}: services.{name}: {why}")
            elif isinstance(service, dict) and isinstance(service.get("image"), str):
                images[str(name)] = service["image"]
            else:
                images.setdefault(str(name), "")
    if refused:
        raise InventoryError(refused)
    missing = [name for name, image in images.items() if not image]
    if missing:
        problems = []
        for name in missing:
            file, line = _where_defined(name, spec, documents)
            problems.append(f"{file}:{line}: services.{name}.image: {NO_IMAGE}")
        raise InventoryError(problems)
    raw = json.dumps({name: doc.data for name, doc in documents.items()}, sort_keys=True, default=str)
    return ComposeModel(images=images, mounts={name: ("",) for name in images},
                        digest="sha256:" + hashlib.sha256(raw.encode()).hexdigest())


def affected_services(mounts: Mapping[str, Sequence[str]], changed: set[str]) -> list[str]:
    """Services that mount a changed path, or a folder above one (``""`` mounts everything)."""
    def hit(mount: str) -> bool:
        return any(mount == "" or path == mount or path.startswith(mount + "/") for path in changed)
    return sorted(name for name, paths in mounts.items() if changed and any(hit(m) for m in paths))

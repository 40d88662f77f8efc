"""The container runtime as Fargate applies it, for the rehearsal's ECS tasks (bubblewrap, no engine).

No container engine runs here and no base image can be pulled, so ``docker/Dockerfile`` cannot be
built. What Fargate does to the process is reproduced instead, from the two files that decide it:

* from **the image** (``docker/Dockerfile``, the ``app`` stage and the stages it is built from):
  ``USER``, ``WORKDIR``, ``ENV``, ``VOLUME``, ``ENTRYPOINT``, ``CMD``, and the home directory of its
  user (``useradd``);
* from **the task definition** as Terraform registered it: ``user``, ``readonlyRootFilesystem``, the
  mount points and their volumes, ``workingDirectory``, ``entryPoint``/``command``, ``environment`` and
  ``secrets``, ``healthCheck``.

The process runs under ``bwrap`` (Debian's bubblewrap) in its own mount, PID, IPC and UTS namespaces,
as that user (``setpriv``: no capabilities, no new privileges), with this machine's root file system
standing in for the image's, **read-only** when ``readonlyRootFilesystem`` is set; the only writable
paths are the task's volumes, each a fresh directory owned and moded as Fargate makes it (AWS:
"By default, the volume permissions are set to 0755 and the owner as root"; when the image declares
a ``VOLUME`` at the same path, "the data in the VOLUME directive path is copied to the data volume":
https://docs.aws.amazon.com/AmazonECS/latest/developerguide/bind-mounts.html). The environment is
exactly the image's ``ENV``, the task definition's, its secrets and what Fargate adds; nothing of this
machine's. What the image would hold and this machine stands in for is named in :data:`STAND_INS`.

Why bubblewrap and not podman: podman needs an image (none can be pulled or built here) and its own
storage; bubblewrap runs a host command with exactly the namespaces, mounts and user asked for, and
nothing else, which is what has to be reproduced. Not reproduced: the image's own files (Debian slim
+ the venv; here this machine's), the task's network namespace (tasks share the loopback), cgroup
CPU/memory limits, the task metadata endpoint.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Docker's PATH for a container whose image sets none (what ``$PATH`` expands to in ENV).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class ImageConfig:
    """What a Dockerfile stage gives a container."""

    user: str = "0"
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=lambda: {"PATH": DEFAULT_PATH})
    volumes: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    homes: dict[str, str] = field(default_factory=dict)  # uid -> home directory (the image's /etc/passwd)
    added: dict[str, str] = field(default_factory=dict)  # container path -> where ADD/COPY took it from

    def home(self, user: str) -> str:
        """HOME as the runtime sets it: the user's entry in the image's passwd, else ``/``."""
        uid = user.split(":", 1)[0]
        return self.homes.get(uid, "/")


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _words(arguments: str) -> list[str]:
    """A JSON array (exec form) or a shell string (``/bin/sh -c``)."""
    if arguments.startswith("["):
        return [str(w) for w in json.loads(arguments)]
    return ["/bin/sh", "-c", arguments]


def _expand(value: str, env: dict[str, str], args: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return env.get(name, args.get(name, ""))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, value)


def _env_pairs(arguments: str) -> list[tuple[str, str]]:
    words = shlex.split(arguments)
    if words and "=" not in words[0]:  # legacy form: ENV KEY value with spaces
        return [(words[0], " ".join(words[1:]))]
    return [(w.split("=", 1)[0], w.split("=", 1)[1]) for w in words]


def image_config(dockerfile: Path, target: str) -> ImageConfig:
    """The configuration ``target`` (a stage name) gives its containers."""
    stages: dict[str, ImageConfig] = {}
    args: dict[str, str] = {}
    config: ImageConfig | None = None
    name = ""
    for instruction, arguments in _instructions(dockerfile.read_text()):
        if instruction == "ARG" and config is None:
            key, _, value = arguments.partition("=")
            args[key.strip()] = value.strip()
            continue
        if instruction == "FROM":
            if config is not None:
                stages[name] = config
            words = arguments.split()
            words = [w for w in words if not w.startswith("--")]
            base = _expand(words[0], {}, args)
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else ""
            parent = stages.get(base)
            config = ImageConfig() if parent is None else _copy(parent)
            continue
        if config is None:
            continue
        if instruction == "ENV":
            for key, value in _env_pairs(arguments):
                config.env[key] = _expand(value, config.env, args)
        elif instruction == "USER":
            config.user = _expand(arguments, config.env, args)
        elif instruction == "WORKDIR":
            config.workdir = os.path.join(config.workdir, _expand(arguments, config.env, args))
        elif instruction == "VOLUME":
            config.volumes += _words(arguments) if arguments.startswith("[") else arguments.split()
        elif instruction == "ENTRYPOINT":
            config.entrypoint = _words(arguments)
            config.cmd = []  # Docker: a new ENTRYPOINT resets an inherited CMD
        elif instruction == "CMD":
            config.cmd = _words(arguments)
        elif instruction == "RUN" and "useradd" in arguments:
            command = arguments.split("useradd", 1)[1].split("&&", 1)[0].split()
            uid = command[command.index("--uid") + 1] if "--uid" in command else ""
            login = next((w for w in reversed(command) if not w.startswith("-")), "")
            home = command[command.index("--home-dir") + 1] if "--home-dir" in command else f"/home/{login}"
            if uid:
                config.homes[uid] = home
                config.homes[login] = home
        elif instruction in ("ADD", "COPY"):
            words = [w for w in shlex.split(arguments) if not w.startswith("--")]
            if len(words) >= 2:
                for source in words[:-1]:
                    config.added[words[-1]] = source
    if config is not None:
        stages[name] = config
    if target not in stages:
        raise ValueError(f"{dockerfile} has no stage named {target!r}")
    return stages[target]


def _copy(config: ImageConfig) -> ImageConfig:
    return ImageConfig(
        config.user, config.workdir, dict(config.env), list(config.volumes), list(config.entrypoint),
        list(config.cmd), dict(config.homes), dict(config.added),
    )  # fmt: skip


# --- the sandbox --------------------------------------------------------------------------------------

#: What the image would hold, by where the Dockerfile puts it, and what stands in for it here: the
#: application's venv (the project's own venv, with its editable source) and the DocumentDB CA bundle
#: ADDed from Amazon's trust store (the local CA that signed the DocumentDB stand-in's certificate).
STAND_INS = {
    "/opt/venv": "venv",
    "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem": "ca",
}
#: Where the local CA is for the workload's Kafka client (MSK's certificates chain to a public CA
#: that every trust store has; the local broker's to the local CA, given to the client explicitly).
KAFKA_CA_PATH = "/etc/ssl/certs/sensor-pipeline-local-ca.pem"


@dataclass
class Sandbox:
    """A container of a task, as a bwrap command line (see the module docstring)."""

    argv: list[str]
    prefix: list[str]  # argv without the program: the same container for another command (a health check)
    env: dict[str, str]
    user: str
    readonly_root: bool
    writable: dict[str, str]  # container path -> host directory
    notes: list[str]


def _closed_folder(path: Path) -> Path | None:
    """The outermost folder on the way to ``path`` that other users may not traverse (e.g. /root, 0700)."""
    folders = [p for p in reversed((path, *path.parents)) if p.is_dir()]
    return next((p for p in folders if not p.stat().st_mode & stat.S_IXOTH), None)


def _volume_mode(image: ImageConfig, container_path: str) -> tuple[int, int, int, str]:
    """(uid, gid, mode, why) of a fresh bind-mount volume at ``container_path``."""
    if container_path in image.volumes:
        here = Path(container_path)
        if here.is_dir():  # the image's directory is this machine's (the stand-in root)
            info = here.stat()
            return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode), "the image's VOLUME: its directory copied"
        return 0, 0, 0o755, "the image's VOLUME, a directory the image lacks: root 0755"
    return 0, 0, 0o755, "no VOLUME in the image at this path: root 0755 (Fargate's default)"


def build(
    image: ImageConfig,
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    environment: dict[str, str],
    folder: Path,
    stand_ins: dict[str, Path],
) -> Sandbox:
    """The bwrap command for one container; ``folder`` receives its volumes and staging directories.

    ``environment``: the task definition's variables and resolved secrets plus what Fargate adds
    (credentials endpoint, region), already translated for this machine.
    """
    notes: list[str] = []
    user = str(container.get("user") or image.user)
    uid, _, gid = user.partition(":")
    if not uid.isdigit():
        raise ValueError(f"user {user!r}: only numeric users can be run here (the image's passwd is not reproduced)")
    readonly = bool(container.get("readonlyRootFilesystem"))
    # The container's process is PID 1 of its own PID namespace, as on Fargate without initProcessEnabled
    # (no reaper; a signal it installs no handler for is ignored, as PID 1's are).
    argv = ["bwrap", "--die-with-parent", "--unshare-pid", "--as-pid-1", "--unshare-ipc", "--unshare-uts"]
    argv += ["--hostname", folder.name[:63]]
    argv += ["--ro-bind", "/", "/"] if readonly else ["--bind", "/", "/"]
    argv += ["--dev", "/dev", "--perms", "1777", "--tmpfs", "/dev/shm", "--proc", "/proc"]
    if not readonly:
        notes.append("readonlyRootFilesystem is false: this machine's root is writable to root only")
    used_inside = _used_inside(stand_ins)
    argv += _reachable(list(dict.fromkeys([*used_inside, *stand_ins.values()])), notes)
    argv += _stand_ins(image, stand_ins, folder, notes)
    mounts, writable = _volumes(image, container, volumes, folder, notes)
    argv += mounts
    argv += _kept_visible(used_inside, [m["containerPath"] for m in container.get("mountPoints") or []], notes)
    env = dict(image.env) | {"HOSTNAME": folder.name[:63]}
    env.setdefault("HOME", image.home(user))
    env |= environment
    argv += ["--clearenv"]
    for key, value in sorted(env.items()):
        argv += ["--setenv", key, value]
    argv += ["--chdir", container.get("workingDirectory") or image.workdir]
    entrypoint = container.get("entryPoint") or image.entrypoint
    program = [*entrypoint, *(container.get("command") or image.cmd)]
    if not program:
        raise ValueError("the container has neither an entry point nor a command")
    resolved = _which(program[0], env.get("PATH", DEFAULT_PATH), stand_ins)
    argv += ["--", "setpriv", f"--reuid={uid}", f"--regid={gid or uid}", "--clear-groups", "--no-new-privs"]
    argv += ["--inh-caps=-all", "--bounding-set=-all"]
    return Sandbox([*argv, resolved, *program[1:]], argv, env, user, readonly, writable, notes)


def _used_inside(stand_ins: dict[str, Path]) -> list[Path]:
    """This machine's paths the container uses at their own paths: the interpreter's prefix and, for
    the venv stand-in, the venv (its scripts' shebangs name it) and the project's source (its editable
    install). The CA stand-in is mounted from outside only."""
    paths = [Path(sys.base_prefix)]
    if "venv" in stand_ins:
        paths += [stand_ins["venv"], Path(__file__).resolve().parents[2]]  # src/, where sensor_pipeline is
    return paths


def _kept_visible(hosts: list[Path], mount_points: list[str], notes: list[str]) -> list[str]:
    """A task's volume mounted over a folder that holds a stand-in (a checkout under /tmp, where the
    API mounts its /tmp volume) would hide it: such paths are mounted again on top, read-only."""
    argv: list[str] = []
    made: set[Path] = set()
    for host in dict.fromkeys(hosts):
        over = [Path(m) for m in mount_points if host == Path(m) or Path(m) in host.parents]
        if over:
            argv += [*_traversable_path(over[0], host, made), "--ro-bind", str(host), str(host)]
            notes.append(f"{host} (a stand-in for the image's files) kept visible under the mount at {over[0]}")
    return argv


def _traversable_path(base: Path, host: Path, made: set[Path]) -> list[str]:
    """The folders between ``base`` and ``host``, traversable only (bwrap would make them 0700: closed
    to the container's user)."""
    argv: list[str] = []
    for step in reversed(host.relative_to(base).parents[:-1]):
        if base / step not in made:
            made.add(base / step)
            argv += ["--perms", "0711", "--dir", str(base / step)]
    return argv


def _reachable(hosts: list[Path], notes: list[str]) -> list[str]:
    """The image's /root is the root user's; this machine's may hold what the app must reach (its
    Python): such a folder is hidden but for those paths, read-only."""
    argv: list[str] = []
    hidden: dict[Path, list[Path]] = {}
    for host in hosts:
        blocked = _closed_folder(host)
        if blocked is not None:
            hidden.setdefault(blocked, []).append(host)
    for blocked, inside in hidden.items():
        argv += ["--perms", "0711", "--tmpfs", str(blocked)]
        made: set[Path] = set()
        for host in inside:
            argv += [*_traversable_path(blocked, host, made), "--ro-bind", str(host), str(host)]
        notes.append(f"{blocked} (not traversable here) hidden but for {', '.join(map(str, inside))}")
    return argv


def _stand_ins(image: ImageConfig, stand_ins: dict[str, Path], folder: Path, notes: list[str]) -> list[str]:
    """What the image holds that this machine stands in for, mounted where the image has it."""
    mounts: list[tuple[str, Path]] = []
    for container_path, source in image.added.items():
        kind = STAND_INS.get(source) or STAND_INS.get(container_path)
        if kind and kind in stand_ins:
            mounts.append((container_path, stand_ins[kind]))
            notes.append(f"{container_path} (the image's, from {source}) -> {stand_ins[kind]}")
    if "ca" in stand_ins:
        mounts.append((KAFKA_CA_PATH, stand_ins["ca"]))
    argv: list[str] = []
    staged: dict[Path, Path] = {}
    for container_path, host in mounts:
        target = Path(container_path)
        if not target.exists():  # a new mount point on a read-only root: in a copy of its parent
            parent = next(p for p in target.parents if p.exists())
            if parent not in staged:
                staged[parent] = folder / "staged" / parent.relative_to("/")
                argv += _stage(parent, staged[parent])
            point = staged[parent] / target.relative_to(parent)
            point.parent.mkdir(parents=True, exist_ok=True)
            point.mkdir() if host.is_dir() else point.touch()
        argv += ["--ro-bind", str(host), container_path]
    return argv


def _volumes(
    image: ImageConfig, container: dict[str, Any], volumes: list[dict[str, Any]], folder: Path, notes: list[str]
) -> tuple[list[str], dict[str, str]]:
    """The task's mount points: a fresh folder per volume, owned and moded as Fargate makes it."""
    argv: list[str] = []
    writable: dict[str, str] = {}
    by_name = {v["name"]: v for v in volumes}
    for mount in container.get("mountPoints") or []:
        volume = by_name.get(mount["sourceVolume"], {})
        if volume.get("host") or volume.get("efsVolumeConfiguration") or volume.get("dockerVolumeConfiguration"):
            raise ValueError(f"volume {mount['sourceVolume']}: only Fargate bind-mount volumes are reproduced")
        host_dir = folder / "volumes" / mount["sourceVolume"]
        if not host_dir.exists():
            host_dir.mkdir(parents=True)
            owner, group, mode, why = _volume_mode(image, mount["containerPath"])
            os.chown(host_dir, owner, group)
            host_dir.chmod(mode)
            where = f"volume {mount['sourceVolume']} at {mount['containerPath']}"
            notes.append(f"{where}: {why} ({owner}:{group} {mode:o})")
        flag = "--ro-bind" if mount.get("readOnly") else "--bind"
        argv += [flag, str(host_dir), mount["containerPath"]]
        if not mount.get("readOnly"):
            writable[mount["containerPath"]] = str(host_dir)
    return argv, writable


def _which(program: str, path: str, stand_ins: dict[str, Path]) -> str:
    """The program as the container's PATH finds it (through the stand-ins), for setpriv (no PATH lookup
    of its own in the cleared environment)."""
    if "/" in program:
        return program
    venv = stand_ins.get("venv")
    for folder in path.split(":"):
        inside = folder.removeprefix("/opt/venv").lstrip("/") if folder.startswith("/opt/venv") else None
        if venv is not None and inside is not None and (venv / inside / program).exists():
            return f"{folder}/{program}"
        if (Path(folder) / program).exists():
            return f"{folder}/{program}"
    raise ValueError(f"{program}: not found on the container's PATH ({path})")


def _stage(directory: Path, staging: Path) -> list[str]:
    """Bind arguments that replace ``directory`` by a copy of it on which new mount points can be made."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    staging.chmod(stat.S_IMODE(directory.stat().st_mode))
    argv = ["--ro-bind", str(staging), str(directory)]
    for entry in sorted(directory.iterdir()):
        copy = staging / entry.name
        if entry.is_symlink():
            copy.symlink_to(os.readlink(entry))
        elif entry.is_dir():
            copy.mkdir()
            argv += ["--ro-bind", str(entry), str(directory / entry.name)]
        else:
            copy.touch()
            argv += ["--ro-bind", str(entry), str(directory / entry.name)]
    return argv


def shell(health: list[str]) -> list[str]:
    """A task definition health check's command: ``CMD-SHELL x`` runs ``/bin/sh -c x``, ``CMD a b`` runs a b."""
    if not health:
        raise ValueError("empty health check")
    if health[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(health[1:])]
    if health[0] == "CMD":
        return health[1:]
    return health

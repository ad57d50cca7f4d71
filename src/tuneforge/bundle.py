"""The model bundle: a self-describing directory that needs nothing else to load.

Layout::

    tuneforge.json       what this is: format version, task, method, labels, base model
                         identity + hash, max_length, thresholds
    model/               a standalone Hugging Face model (methods full, head), safetensors
    adapter/             a peft adapter with the head (methods lora, ia3), safetensors
    tokenizer/           the tokenizer
    run_config.json      the resolved run configuration
    events.jsonl         training events
    eval.json            metrics of the best checkpoint on validation and test
    eval_test.md, confusion_matrix_test.png
    data.json            data fingerprint: files, sha256, rows, split sizes
    splits.json          which rows went to which split (content hashes)
    environment.json     versions, seed, hardware
    README.md            model card

Everything is written into a staging directory next to the output and renamed into place
at the end, so an interrupted run never leaves a bundle that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import InputError

BUNDLE_FORMAT = "tuneforge-bundle"
BUNDLE_VERSION = 1
MANIFEST = "tuneforge.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """UTF-8 text version of ``atomic_write_bytes``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON (indent 2, no NaN) atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def staging_dir(output: Path) -> Path:
    """The run's working directory next to ``output`` (checkpoints, partial bundle)."""
    return output.parent / f".{output.name}.partial"


def check_output_dir(output: Path, *, overwrite: bool) -> None:
    """Refuse a non-empty output directory unless ``overwrite``; refuse a file."""
    if output.exists() and not output.is_dir():
        raise InputError(f"--output {output} is a file; pass a directory path")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise InputError(
            f"--output {output} is not empty; pass --overwrite to replace it, "
            "or choose a new directory"
        )


def publish(staged: Path, output: Path) -> None:
    """Move a complete staged bundle to ``output``, replacing what was there."""
    output.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if output.exists():
        old = output.parent / f".{output.name}.old-{os.getpid()}"
        output.rename(old)
    staged.rename(output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@dataclass(frozen=True)
class BundleInfo:
    """The parsed ``tuneforge.json`` of a bundle.

    Attributes:
        path: The bundle directory.
        manifest: The raw manifest dict.
    """

    path: Path
    manifest: dict[str, Any]

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def multi_label(self) -> bool:
        return self.manifest["task"] == "multi_label"

    @property
    def method(self) -> str:
        return self.manifest["method"]

    @property
    def adapter(self) -> bool:
        return bool(self.manifest["adapter"])

    @property
    def max_length(self) -> int:
        return int(self.manifest["max_length"])


def read_bundle(path: str | Path) -> BundleInfo:
    """Open a bundle directory and validate its manifest.

    Raises:
        InputError: Not a directory, no manifest, or an unknown format/version.
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise InputError(f"model bundle {path} does not exist or is not a directory")
    if not manifest_path.is_file():
        raise InputError(
            f"{path} is not a tuneforge bundle (no {MANIFEST}); pass the --output "
            "directory of a finished `tuneforge train` run"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{manifest_path} is not valid JSON: {exc}") from exc
    if manifest.get("format") != BUNDLE_FORMAT:
        raise InputError(f"{manifest_path}: not a {BUNDLE_FORMAT} manifest")
    if manifest.get("version") != BUNDLE_VERSION:
        raise InputError(
            f"{manifest_path}: bundle version {manifest.get('version')} is not supported by "
            f"this tuneforge (supports {BUNDLE_VERSION}); upgrade tuneforge"
        )
    return BundleInfo(path=path, manifest=manifest)

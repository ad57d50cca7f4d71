"""Refuse model directories that would run code on load: pickle weights, custom model code.

tuneforge never unpickles and never runs code shipped with a checkpoint. A directory whose
weights exist only as ``pytorch_model.bin`` (a pickle), whose ``config.json`` or
``tokenizer_config.json`` names custom classes (``auto_map``), or that carries ``.py``
files is refused with an :class:`~tuneforge.errors.InputError` *before* transformers opens
anything in it.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from collections import Counter
from pathlib import Path

from tuneforge.errors import InputError

_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz"}
_CODE_SUFFIXES = {".py", ".pyc", ".pyo", ".pyd", ".pyz", ".so", ".dll", ".dylib"}
_MAX_CONFIG_BYTES = 16 * 1024 * 1024
# bytes per element of the safetensors dtypes
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip
_CONFIG_FILES = ("config.json", "tokenizer_config.json", "adapter_config.json")

CONVERT_HINT = (
    "convert it once in a trusted environment: "
    "AutoModel.from_pretrained(DIR).save_pretrained(NEW_DIR, safe_serialization=True)"
)


def check_safe_model_dir(path: Path, what: str = "model", *, needs_weights: bool = True) -> None:
    """Raise unless ``path`` can be loaded without unpickling or running its code.

    Args:
        path: A Hugging Face checkpoint directory (a base model, or a bundle's ``model/``,
            ``adapter/`` or ``tokenizer/`` folder).
        what: How to name the directory in the error message.
        needs_weights: Whether the directory must hold weights (a tokenizer folder does not).

    Raises:
        InputError: Weights only as pickle files, custom code (``auto_map`` or ``.py`` files).
    """
    files = [p for p in path.iterdir() if p.is_file()] if path.is_dir() else []
    code = sorted(p.name for p in files if p.suffix == ".py")
    if code:
        raise InputError(
            f"{what} {path} ships Python code ({', '.join(code[:3])}); tuneforge never runs "
            "code from a checkpoint (trust_remote_code is always off). Use a checkpoint of a "
            "model class built into transformers (e.g. BERT, RoBERTa, MiniLM)"
        )
    for name in _CONFIG_FILES:
        config = path / name
        if config.is_file() and "auto_map" in _read_json(config):
            raise InputError(
                f"{what} {path}: {name} has an 'auto_map' (custom model code); tuneforge never "
                "runs code from a checkpoint (trust_remote_code is always off). Use a checkpoint "
                "of a model class built into transformers (e.g. BERT, RoBERTa, MiniLM)"
            )
    if not needs_weights:
        return
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    pickles = sorted(p.name for p in files if p.suffix in _PICKLE_SUFFIXES)
    if pickles and not safetensors:
        raise InputError(
            f"{what} {path} ships its weights only as pickle ({', '.join(pickles[:3])}); "
            "tuneforge loads safetensors only, because unpickling can run arbitrary code. "
            f"{CONVERT_HINT}"
        )


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from exc
    return value if isinstance(value, dict) else {}


def check_safe_tree(root: Path, what: str) -> dict[Path, tuple[int, int, int, int]]:
    """Every file under ``root`` that may be copied and served, or an error for the first
    file that may not.

    Nothing is followed: a symbolic link anywhere (to a file, a folder, itself or nowhere) is
    refused, as is a special file (FIFO, socket, device) and a file hard-linked to one
    outside ``root``. Then every file is checked for what loading it could do: code
    (``.py``, shared libraries), pickles, ``auto_map`` in a ``*config.json``, and a
    ``.safetensors`` file whose size does not match its header (truncated or padded).
    Entries whose name starts with ``.`` are skipped: they are neither checked nor copied.

    Args:
        root: The directory (a model bundle).
        what: How to name ``root`` in error messages.

    Returns:
        The regular files, relative to ``root``, in walk order, each with its
        ``file_identity``: a copy can check it opens the very file that was checked.

    Raises:
        InputError: The first link, special file, code, pickle, ``auto_map`` or broken
            weights file found.
    """
    if root.is_symlink():
        raise InputError(f"{what} is a symbolic link; {_NO_LINKS}")
    if not root.is_dir():
        raise InputError(f"{what} does not exist or is not a directory")
    found: list[tuple[Path, os.stat_result]] = []

    def fail(exc: OSError) -> None:
        raise InputError(f"{what}: cannot read {exc.filename}: {exc.strerror}")

    for folder, dirs, names in os.walk(root, onerror=fail, followlinks=False):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in [*dirs, *sorted(n for n in names if not n.startswith("."))]:
            path = here / name
            rel = path.relative_to(root)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                raise InputError(f"{what}: {rel} is a symbolic link; {_NO_LINKS}")
            if stat.S_ISDIR(info.st_mode):
                continue
            if not stat.S_ISREG(info.st_mode):
                raise InputError(
                    f"{what}: {rel} is not a regular file (a FIFO, socket or device); "
                    "remove it from the bundle"
                )
            found.append((rel, info))
    inodes = Counter((info.st_dev, info.st_ino) for _, info in found)
    for rel, info in found:
        if info.st_nlink > inodes[(info.st_dev, info.st_ino)]:
            raise InputError(
                f"{what}: {rel} is hard-linked to a file outside the bundle; {_NO_LINKS}"
            )
    for rel, _info in found:
        _check_file(root / rel, rel, what)
    return {rel: file_identity(info) for rel, info in found}


def file_identity(info: os.stat_result) -> tuple[int, int, int, int]:
    """(device, inode, size, modification time in ns): a file replaced or rewritten since
    it was seen has another identity, even where the file system reuses the inode."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


_NO_LINKS = (
    "tuneforge never follows links in a bundle it imports: replace each link with a copy "
    "of the file (e.g. cp -rL BUNDLE NEW_DIR, after checking where the links point)"
)


def _check_file(path: Path, rel: Path, what: str) -> None:
    suffix = path.suffix.lower()
    if suffix in _CODE_SUFFIXES:
        raise InputError(
            f"{what}: {rel} is code; tuneforge never runs code from a bundle. Remove it"
        )
    if suffix in _PICKLE_SUFFIXES:
        raise InputError(
            f"{what}: {rel} is a pickle; tuneforge loads safetensors only, because unpickling "
            f"can run arbitrary code. Remove it, or {CONVERT_HINT}"
        )
    if path.name.endswith("config.json"):
        if path.stat().st_size > _MAX_CONFIG_BYTES:
            raise InputError(f"{what}: {rel} is larger than a configuration file can be")
        if "auto_map" in _read_json(path):
            raise InputError(
                f"{what}: {rel} has an 'auto_map' (custom model code); tuneforge never runs "
                "code from a checkpoint (trust_remote_code is always off)"
            )
    if suffix == ".safetensors":
        problem = _safetensors_problem(path)
        if problem:
            raise InputError(
                f"{what}: {rel} is not a complete safetensors file ({problem}); copy the "
                "bundle again from where it was trained"
            )


def _safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file (header, offsets, size), or None."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than its header"
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 * 1024 * 1024):
            return "its header runs past the end of the file"
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "its header is not JSON"
    if not isinstance(header, dict):
        return "its header is not a table of tensors"
    end = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = (int(x) for x in tensor["data_offsets"])
            shape = [int(x) for x in tensor["shape"]]
            dtype = str(tensor["dtype"])
        except (TypeError, KeyError, ValueError):
            return f"tensor {name!r} has no valid dtype, shape and offsets"
        count = 1
        for dim in shape:
            count *= dim
        width = _DTYPE_BYTES.get(dtype)
        if not 0 <= begin <= stop or (width is not None and stop - begin != count * width):
            return f"tensor {name!r} has offsets that do not match its shape"
        end = max(end, stop)
    if size != 8 + n + end:
        return f"{size} bytes where its header describes {8 + n + end}"
    return None

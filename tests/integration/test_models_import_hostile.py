"""``tuneforge models import`` trusts nothing in the bundle it is given.

Refused with exit 2 and one message, leaving nothing in the data directory (no ``.partial``
folder, no database row): pickle weights, links of any kind (never followed), code, a
truncated weights file, a manifest with insane values or nothing but a manifest, an adapter
whose base model is not one of the server's, an empty project. A good bundle imports and is
loaded once on the way in (a dry run), so what is imported is what the server can serve.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import run_cli, sentiment_rows, write_csv

TINY = "tiny-bert"


class _Trap:
    """Unpickling this creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _train(tiny_model: Path, root: Path, *args: str) -> Path:
    data = write_csv(root / "train.csv", sentiment_rows(40))
    out = root / "bundle"
    result = run_cli(
        "train", data, "--model", tiny_model, "--epochs", "1", "--patience", "0",
        "--threads", "1", "--quiet", "--export", "none", "--output", out, *args,
    )  # fmt: skip
    assert result.code == 0, result
    return out


@pytest.fixture(scope="module")
def bundle(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tiny_model, tmp_path_factory.mktemp("import-full"))


@pytest.fixture(scope="module")
def adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tiny_model, tmp_path_factory.mktemp("import-lora"), "--method", "lora")


class Server:
    """A data directory and config file, as ``tuneforge serve`` would use them."""

    def __init__(self, root: Path, tiny_model: Path) -> None:
        self.data = root / "data"
        self.config = root / "server.json"
        self.config.write_text(json.dumps({"base_models": {TINY: str(tiny_model)}}))

    def import_(self, bundle: Path, *args: object, project: str = "acme"):
        return run_cli(
            "models", "import", bundle, "--project", project,
            "--data-dir", self.data, "--config", self.config, *args,
        )  # fmt: skip

    def models(self) -> list[str]:
        """Every entry in the data dir's models folder, hidden ones included."""
        folder = self.data / "models"
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def rows(self) -> list[tuple[str, str]]:
        db = self.data / "tuneforge.db"
        if not db.exists():
            return []
        with sqlite3.connect(db) as conn:
            return conn.execute("select id, project from models").fetchall()

    def assert_refused(self, result, *needles: str) -> None:
        assert result.code == 2, result
        assert "Traceback" not in result.stderr and "shutil.Error" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        for needle in needles:
            assert needle in result.stderr, result
        assert self.models() == [], "import left files behind"
        assert self.rows() == [], "import registered a model"


@pytest.fixture()
def server(tmp_path: Path, tiny_model: Path) -> Server:
    return Server(tmp_path, tiny_model)


def copy_of(bundle: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(bundle, target, symlinks=True)
    return target


def edit_manifest(bundle: Path, change: Callable[[dict], None]) -> None:
    path = bundle / "tuneforge.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


# ---------------------------------------------------------------- what is accepted


def test_a_good_bundle_and_a_good_adapter_import(
    server: Server, bundle: Path, adapter: Path
) -> None:
    full = server.import_(bundle, "--name", "full")
    lora = server.import_(adapter, "--name", "lora")
    assert full.code == 0 and full.stdout.strip() == "full", full
    assert lora.code == 0 and lora.stdout.strip() == "lora", lora
    assert sorted(server.rows()) == [("full", "acme"), ("lora", "acme")]
    folders = server.models()
    assert len(folders) == 2 and not any(name.startswith(".") for name in folders)
    copied = server.data / "models" / folders[0]
    assert (copied / "tuneforge.json").is_file() and (copied / "tokenizer").is_dir()


# ---------------------------------------------------------------- (a) pickle weights


def test_pickle_only_weights_are_refused_unopened(
    server: Server, bundle: Path, tmp_path: Path
) -> None:
    copy = copy_of(bundle, tmp_path)
    for weights in (copy / "model").glob("*.safetensors"):
        weights.unlink()
    marker = tmp_path / "unpickled"
    (copy / "model" / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(marker)))
    server.assert_refused(server.import_(copy), "pytorch_model.bin", "safetensors")
    assert not marker.exists()


def test_a_pickle_anywhere_in_the_bundle_is_refused(
    server: Server, bundle: Path, tmp_path: Path
) -> None:
    copy = copy_of(bundle, tmp_path)
    (copy / "extra").mkdir()
    (copy / "extra" / "optimizer.pt").write_bytes(pickle.dumps({"a": 1}))
    server.assert_refused(server.import_(copy), "optimizer.pt", "pickle")


# ---------------------------------------------------------------- (b, c) links


def _link_readme_to_passwd(b: Path) -> None:
    (b / "README.md").unlink()
    os.symlink("/etc/passwd", b / "README.md")


def _two_link_loop(b: Path) -> None:
    os.symlink(b / "y", b / "x")
    os.symlink(b / "x", b / "y")


LINKS = {
    "file-to-etc-passwd": _link_readme_to_passwd,
    "dir-to-root": lambda b: os.symlink("/", b / "root"),
    "self-loop": lambda b: os.symlink(b / "loop", b / "loop"),
    "two-link-loop": _two_link_loop,
    "dir-to-parent": lambda b: os.symlink("..", b / "tokenizer" / "up"),
    "dangling": lambda b: os.symlink("/nonexistent", b / "dangling"),
    "file-in-model": lambda b: os.symlink("/etc/passwd", b / "model" / "vocab.txt"),
}


@pytest.mark.parametrize("case", sorted(LINKS))
def test_symbolic_links_are_refused_never_followed(
    case: str, server: Server, bundle: Path, tmp_path: Path
) -> None:
    copy = copy_of(bundle, tmp_path)
    LINKS[case](copy)
    server.assert_refused(server.import_(copy), "link")


def test_the_bundle_itself_being_a_link_is_refused(
    server: Server, bundle: Path, tmp_path: Path
) -> None:
    os.symlink(bundle, tmp_path / "linked")
    server.assert_refused(server.import_(tmp_path / "linked", "--name", "x"), "link")


def test_a_hard_link_to_a_file_outside_the_bundle_is_refused(
    server: Server, bundle: Path, tmp_path: Path
) -> None:
    copy = copy_of(bundle, tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the data dir")
    (copy / "README.md").unlink()
    os.link(secret, copy / "README.md")
    server.assert_refused(server.import_(copy), "README.md", "link")


def test_hard_links_inside_the_bundle_are_fine(
    server: Server, bundle: Path, tmp_path: Path
) -> None:
    """Checkpoint sub-bundles hard-link their tokenizer files to the bundle's."""
    copy = copy_of(bundle, tmp_path)
    (copy / "README.md").unlink()
    os.link(copy / "eval_test.md", copy / "README.md")
    assert server.import_(copy).code == 0


def test_a_fifo_is_refused(server: Server, bundle: Path, tmp_path: Path) -> None:
    copy = copy_of(bundle, tmp_path)
    os.mkfifo(copy / "pipe")
    server.assert_refused(server.import_(copy), "pipe", "regular file")


# ---------------------------------------------------------------- code


def test_code_and_auto_map_are_refused(server: Server, bundle: Path, tmp_path: Path) -> None:
    copy = copy_of(bundle, tmp_path, "with-code")
    (copy / "checkpoint_hook.py").write_text("import os\n")
    server.assert_refused(server.import_(copy), "checkpoint_hook.py")

    copy = copy_of(bundle, tmp_path, "auto-map")
    config = json.loads((copy / "model" / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (copy / "model" / "config.json").write_text(json.dumps(config))
    server.assert_refused(server.import_(copy), "auto_map")


# ---------------------------------------------------------------- (d) broken bundles


def test_truncated_weights_are_refused(server: Server, bundle: Path, tmp_path: Path) -> None:
    copy = copy_of(bundle, tmp_path)
    weights = copy / "model" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    server.assert_refused(server.import_(copy), "model.safetensors")


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        pytest.param(lambda m: m.update(max_length=100000), "max_length", id="max_length-100000"),
        pytest.param(lambda m: m.update(max_length=0), "max_length", id="max_length-0"),
        pytest.param(lambda m: m.update(thresholds="abc"), "thresholds", id="thresholds-abc"),
        pytest.param(lambda m: m.update(thresholds=[0.5]), "thresholds", id="thresholds-short"),
        pytest.param(lambda m: m.update(thresholds=[7.0, 0.5]), "thresholds", id="thresholds-7"),
        pytest.param(lambda m: m.update(labels=[]), "labels", id="no-labels"),
        pytest.param(lambda m: m.update(labels=["a", "a"]), "labels", id="duplicate-labels"),
        pytest.param(lambda m: m.update(labels=["a", 3]), "labels", id="label-not-a-string"),
        pytest.param(lambda m: m.update(labels=["a", "b", "c"]), "labels", id="labels-vs-head"),
        pytest.param(lambda m: m["base_model"].update(sha256=5), "sha256", id="sha256-number"),
    ],
)
def test_manifests_with_insane_values_are_refused(
    change, needle: str, server: Server, bundle: Path, tmp_path: Path
) -> None:
    copy = copy_of(bundle, tmp_path)
    edit_manifest(copy, change)
    server.assert_refused(server.import_(copy), needle)


def test_a_bundle_of_only_its_manifest_is_refused(
    server: Server, bundle: Path, tmp_path: Path
) -> None:
    only = tmp_path / "only-manifest"
    only.mkdir()
    shutil.copy(bundle / "tuneforge.json", only)
    server.assert_refused(server.import_(only), "model/")


# ---------------------------------------------------------------- (e) adapter base models


@pytest.mark.parametrize(
    "base",
    [
        pytest.param({"name": "evil/model", "source": "hub", "path": None}, id="hub-id"),
        pytest.param({"name": "elsewhere", "source": "local", "path": "OTHER"}, id="other-dir"),
    ],
)
def test_an_adapter_over_a_base_the_server_does_not_host_is_refused(
    base: dict, server: Server, adapter: Path, tiny_model: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other-base"
    shutil.copytree(tiny_model, other)  # the same weights, but not one of the server's bases
    if base["path"] == "OTHER":
        base = {**base, "path": str(other)}
    copy = copy_of(adapter, tmp_path)
    edit_manifest(copy, lambda m: m["base_model"].update(base))
    server.assert_refused(server.import_(copy), "base model", TINY)


# ---------------------------------------------------------------- (f) names


@pytest.mark.parametrize("project", ["", " ", "a\nb"])
def test_an_empty_or_blank_project_is_refused(project: str, server: Server, bundle: Path) -> None:
    server.assert_refused(server.import_(bundle, project=project), "--project")


def test_a_taken_model_id_is_refused_and_leaves_nothing(server: Server, bundle: Path) -> None:
    assert server.import_(bundle, "--name", "m1").code == 0
    before = server.models()
    again = server.import_(bundle, "--name", "m1", project="beta")
    assert again.code == 2 and "m1" in again.stderr, again
    assert server.models() == before and server.rows() == [("m1", "acme")]


# ---------------------------------------------------------------- checkpoint sub-bundles


@pytest.fixture(scope="module")
def with_checkpoints(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tuneforge.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tuneforge.recipes.finetune_classifier import finetune_classifier

    root = tmp_path_factory.mktemp("import-ckpt")
    config = RunConfig(
        data=DataConfig(train=str(write_csv(root / "train.csv", sentiment_rows(40)))),
        output=str(root / "bundle"),
        model=ModelConfig(name=str(tiny_model)),
        train=TrainConfig(
            epochs=1, batch_size=8, num_threads=1, patience=0, evals_per_epoch=2,
            keep_checkpoints=2,
        ),
    )  # fmt: skip
    bundle = finetune_classifier(config).bundle
    assert list((bundle / "checkpoints").glob("step-*")), "no checkpoint sub-bundles"
    assert any(p.stat().st_nlink > 1 for p in bundle.rglob("*") if p.is_file())
    return bundle


def test_a_bundle_with_checkpoints_imports_and_a_broken_checkpoint_is_refused(
    server: Server, with_checkpoints: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """Checkpoint sub-bundles hard-link files to the bundle's: fine; each is checked."""
    assert server.import_(with_checkpoints, "--name", "ok").code == 0

    (tmp_path / "other").mkdir()
    other = Server(tmp_path / "other", tiny_model)
    copy = copy_of(with_checkpoints, tmp_path)
    step = sorted((copy / "checkpoints").glob("step-*"))[0]
    edit_manifest(step, lambda m: m.update(thresholds=[2.0, 2.0]))
    other.assert_refused(other.import_(copy), "thresholds")


@pytest.mark.parametrize("swap", ["folder-to-link", "file-replaced"])
def test_a_bundle_changed_between_check_and_copy_is_refused(
    swap: str, server: Server, bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A race: the bundle passes the checks, then a folder becomes a link (to a copy of it
    elsewhere, so the same names exist there) or a file is replaced, before it is copied."""
    from tuneforge.server.services import models

    copy = copy_of(bundle, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(copy / "tokenizer", elsewhere)
    real = models.check_safe_tree
    calls = []

    def check_then_swap(root: Path, what: str):
        files = real(root, what)
        if not calls:
            if swap == "folder-to-link":
                shutil.rmtree(copy / "tokenizer")
                os.symlink(elsewhere, copy / "tokenizer")
            else:
                (copy / "README.md").unlink()
                (copy / "README.md").write_text("swapped")
        calls.append(root)
        return files

    monkeypatch.setattr(models, "check_safe_tree", check_then_swap)
    server.assert_refused(server.import_(copy))

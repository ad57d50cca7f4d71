"""``check_safe_tree``: what may be copied out of a bundle, decided without following links or
loading anything."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tuneforge.errors import InputError
from tuneforge.models.safety import check_safe_tree, file_identity


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    (root / "model").mkdir(parents=True)
    save_file({"w": np.zeros((4, 3), dtype=np.float32)}, str(root / "model" / "w.safetensors"))
    (root / "model" / "config.json").write_text('{"model_type": "bert"}')
    (root / ".hidden").write_text("skipped")
    return root


def test_lists_the_files_it_would_copy_with_their_identity(tree: Path) -> None:
    files = check_safe_tree(tree, "b")
    assert sorted(map(str, files)) == ["model/config.json", "model/w.safetensors"]
    weights = (tree / "model" / "w.safetensors").stat()
    assert files[Path("model/w.safetensors")] == file_identity(weights)
    assert file_identity(weights)[:2] == (weights.st_dev, weights.st_ino)
    # rewritten in place (same inode, where the file system reuses it): another identity
    (tree / "model" / "w.safetensors").write_bytes(b"x")
    assert (
        file_identity((tree / "model" / "w.safetensors").stat())
        != files[Path("model/w.safetensors")]
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: w.write_bytes(w.read_bytes()[:-4]), "header describes"),
        (lambda w: w.write_bytes(w.read_bytes() + b"\0"), "header describes"),
        (lambda w: w.write_bytes(b"\x05"), "shorter than its header"),
        (lambda w: w.write_bytes((2**40).to_bytes(8, "little") + b"{}"), "runs past the end"),
        (lambda w: w.write_bytes((4).to_bytes(8, "little") + b"nope"), "not JSON"),
    ],
)
def test_broken_safetensors_are_refused(tree: Path, change, message: str) -> None:
    change(tree / "model" / "w.safetensors")
    with pytest.raises(InputError, match=message):
        check_safe_tree(tree, "b")


def test_a_hidden_link_is_skipped_not_followed(tree: Path) -> None:
    os.symlink("/", tree / ".root")
    assert len(check_safe_tree(tree, "b")) == 2

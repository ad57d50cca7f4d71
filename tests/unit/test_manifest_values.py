"""A manifest's values are checked, not only its keys: what a damaged or hand-edited
``tuneforge.json`` would otherwise turn into an error on every request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.bundle import MANIFEST, BaseModelRef, Manifest, read_bundle, write_manifest
from tuneforge.errors import InputError


def _write(tmp_path: Path, **changes) -> Path:
    manifest = Manifest(
        task="multi_label",
        method="full",
        adapter=False,
        labels=("a", "b"),
        max_length=64,
        base_model=BaseModelRef(name="tiny", source="local", sha256="ab" * 32, path="/m"),
        thresholds=(0.5, 0.4),
    )
    write_manifest(tmp_path, manifest)
    data = json.loads((tmp_path / MANIFEST).read_text())
    data.update(changes)
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    return tmp_path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_length": 0}, "key 'max_length' is 0"),
        ({"max_length": 100_000}, "key 'max_length' is 100000"),
        ({"thresholds": "abc"}, "key 'thresholds' should be a list of numbers"),
        ({"thresholds": [0.5]}, "'thresholds' has 1 values for 2 labels"),
        ({"thresholds": [0.5, 1.5]}, "probabilities in [0, 1]"),
        ({"thresholds": [0.5, True]}, "key 'thresholds' should be a list of numbers"),
        ({"labels": []}, "key 'labels' should be a list of label names"),
        ({"labels": ["a", ""]}, "key 'labels' should be a list of label names"),
        ({"labels": ["a", "a"]}, "names a label twice"),
        ({"method": ""}, "key 'method'"),
        ({"base_model": {"name": "", "source": "local", "sha256": "x"}}, "base_model.name"),
        ({"base_model": {"name": "t", "source": "local", "sha256": 3}}, "base_model.sha256"),
        ({"base_model": {"name": "t", "source": "l", "sha256": "x", "path": 3}}, "base_model.path"),
    ],
)
def test_insane_values_are_refused_by_name(tmp_path: Path, changes: dict, message: str) -> None:
    bundle = _write(tmp_path, **changes)
    with pytest.raises(InputError) as info:
        read_bundle(bundle)
    assert message in str(info.value) and str(bundle / MANIFEST) in str(info.value)


def test_sane_values_load(tmp_path: Path) -> None:
    assert read_bundle(_write(tmp_path)).thresholds == [0.5, 0.4]
    assert read_bundle(_write(tmp_path, thresholds=None, task="single_label")).thresholds is None

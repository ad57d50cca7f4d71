"""The bundle manifest (``tuneforge.json``) as a typed contract: written and read only by
``bundle.py``, round-trips exactly, and refuses missing or unknown keys by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.bundle import (
    MANIFEST,
    BaseModelRef,
    Manifest,
    read_bundle,
    write_manifest,
)
from tuneforge.errors import InputError


def _manifest(**changes) -> Manifest:
    fields = dict(
        task="multi_label",
        method="lora",
        adapter=True,
        labels=("billing", "card", "refund"),
        max_length=128,
        base_model=BaseModelRef(name="tiny", source="local", sha256="ab" * 32, path="/m/tiny"),
        thresholds=(0.4, 0.5, 0.35),
        created_at=1_700_000_000,
    )
    fields.update(changes)
    return Manifest(**fields)


@pytest.mark.parametrize(
    "manifest",
    [_manifest(), _manifest(task="single_label", adapter=False, method="full", thresholds=None)],
)
def test_round_trip(tmp_path: Path, manifest: Manifest) -> None:
    path = write_manifest(tmp_path, manifest)
    assert path == tmp_path / MANIFEST
    info = read_bundle(tmp_path)
    assert info.manifest == manifest
    assert info.labels == list(manifest.labels)
    assert info.multi_label is (manifest.task == "multi_label")
    assert info.thresholds == (list(manifest.thresholds) if manifest.thresholds else None)


def test_json_form_is_the_documented_one(tmp_path: Path) -> None:
    write_manifest(tmp_path, _manifest())
    data = json.loads((tmp_path / MANIFEST).read_text())
    assert data == {
        "format": "tuneforge-bundle",
        "version": 1,
        "task": "multi_label",
        "method": "lora",
        "adapter": True,
        "labels": ["billing", "card", "refund"],
        "max_length": 128,
        "thresholds": [0.4, 0.5, 0.35],
        "base_model": {"name": "tiny", "source": "local", "sha256": "ab" * 32, "path": "/m/tiny"},
        "created_at": 1_700_000_000,
    }


def _write_raw(tmp_path: Path, edit) -> Path:
    write_manifest(tmp_path, _manifest())
    data = json.loads((tmp_path / MANIFEST).read_text())
    edit(data)
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    return tmp_path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("labels"), "missing key 'labels'"),
        (lambda d: d.update(color="red"), "unknown key 'color'"),
        (lambda d: d["base_model"].pop("sha256"), "missing key base_model.'sha256'"),
        (lambda d: d["base_model"].update(url="x"), "unknown key base_model.'url'"),
        (lambda d: d.update(max_length="128"), "key 'max_length' should be a int"),
        (lambda d: d.update(adapter="yes"), "key 'adapter' should be a bool"),
        (lambda d: d.update(task="regression"), "key 'task' is 'regression'"),
        (lambda d: d.update(base_model="tiny"), "base_model is not an object"),
    ],
)
def test_bad_manifest_names_file_and_key(tmp_path: Path, edit, message: str) -> None:
    bundle = _write_raw(tmp_path, edit)
    with pytest.raises(InputError) as info:
        read_bundle(bundle)
    assert str(bundle / MANIFEST) in str(info.value)
    assert message in str(info.value)

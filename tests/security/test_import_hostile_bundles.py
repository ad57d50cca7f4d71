"""``tuneforge models import`` trusts nothing in a bundle, and a model that cannot be loaded
answers 503 ``model_unavailable``, never 500.

Each hostile bundle is a copy of a real one (``full`` or ``lora``) with one thing changed:
(a) pickle-only weights, (b) links to files outside it or a named pipe, (c) a link loop,
(d) truncated weights, a ``max_length`` past the model's limit, malformed ``thresholds``, only
the manifest, (e) an adapter whose manifest names another base (a server path, a hub id); and
(f) an empty ``--project``. Import exits 2 with one clear message and leaves nothing behind;
the same bundle placed in the data directory and registered without ``import`` is refused at
load.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.security.hostile import (
    assert_clean_message,
    assert_error,
    edit_json,
    hostile_copy,
    place_model,
    tree,
)
from tests.server.live import TINY, LiveServer

from conftest import run_cli

pytestmark = [pytest.mark.security, pytest.mark.live]


def secret(tmp: Path) -> str:
    """Text of a file outside the bundle, unique to the test (``tmp`` is its tmp_path)."""
    return f"TOP-SECRET of {tmp.name}: never copy me"


LONG_TEXT = " ".join(["good movie"] * 400)  # far past the tiny model's 128 positions


class Trap:
    """Unpickling this creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def secret_outside(tmp: Path) -> Path:
    folder = tmp / "outside"
    folder.mkdir(exist_ok=True)
    (folder / "secret.txt").write_text(secret(tmp), encoding="utf-8")
    return folder


# Each case: (the bundle it starts from, how it is made hostile). The function changes the
# copy in place and returns a marker file that must never appear (or None).
def pickle_only(copy: Path, tmp: Path) -> Path:
    (copy / "model" / "model.safetensors").unlink()
    marker = tmp / "unpickled"
    (copy / "model" / "pytorch_model.bin").write_bytes(pickle.dumps(Trap(marker)))
    return marker


def file_link(copy: Path, tmp: Path) -> None:
    (copy / "README.md").unlink()
    (copy / "README.md").symlink_to(secret_outside(tmp) / "secret.txt")


def folder_link(copy: Path, tmp: Path) -> None:
    (copy / "extra").symlink_to(secret_outside(tmp), target_is_directory=True)


def link_loop(copy: Path, tmp: Path) -> None:
    (copy / "loop-a").symlink_to(copy / "loop-b")
    (copy / "loop-b").symlink_to(copy / "loop-a")


def named_pipe(copy: Path, tmp: Path) -> None:
    os.mkfifo(copy / "pipe")  # copying it would block on open, or fail half-way


def truncated_weights(copy: Path, tmp: Path) -> None:
    weights = copy / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def huge_max_length(copy: Path, tmp: Path) -> None:
    edit_json(copy / "tuneforge.json", max_length=100_000)


def bad_thresholds(copy: Path, tmp: Path) -> None:
    edit_json(copy / "tuneforge.json", thresholds="abc")


def manifest_only(copy: Path, tmp: Path) -> None:
    for item in copy.iterdir():
        if item.name != "tuneforge.json":
            if item.is_dir():
                import shutil

                shutil.rmtree(item)
            else:
                item.unlink()


def base_elsewhere(where: dict) -> Callable[[Path, Path], None]:
    def change(copy: Path, tmp: Path) -> None:
        manifest = json.loads((copy / "tuneforge.json").read_text(encoding="utf-8"))
        manifest["base_model"].update(where)
        edit_json(copy / "tuneforge.json", base_model=manifest["base_model"])

    return change


CASES: dict[str, tuple[str, Callable[[Path, Path], Path | None]]] = {
    "a-pickle-only-weights": ("full", pickle_only),
    "b-link-to-a-file-outside": ("full", file_link),
    "b-link-to-a-folder-outside": ("full", folder_link),
    "b-named-pipe": ("full", named_pipe),
    "c-link-loop": ("full", link_loop),
    "d-truncated-safetensors": ("full", truncated_weights),
    "d-max-length-100000": ("full", huge_max_length),
    "d-thresholds-abc": ("full", bad_thresholds),
    "d-manifest-only": ("full", manifest_only),
    "e-adapter-base-server-path": ("lora", base_elsewhere({"name": "/etc", "path": "/etc"})),
    "e-adapter-base-hub-id": (
        "lora",
        base_elsewhere({"name": "evil-org/evil-model", "source": "hub", "path": None}),
    ),
}
# Links and pipes are about copying; a loaded model never reads them.
LOAD_CASES = [c for c in CASES if not c.startswith(("b-", "c-"))]


def make(case: str, bundles: dict[str, Path], tmp: Path) -> tuple[Path, Path | None]:
    source, change = CASES[case]
    copy = hostile_copy(bundles[source], tmp / case)
    return copy, change(copy, tmp)


def import_bundle(server: LiveServer, bundle: Path, name: str, project: str = "acme"):
    return run_cli(
        "models", "import", bundle, "--project", project, "--name", name,
        "--data-dir", server.settings.data_dir,
    )  # fmt: skip


def data_files_text(root: Path) -> str:
    """The text of every regular file under ``root`` (links not followed)."""
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                out.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(out)


@pytest.fixture()
def base_models_env(monkeypatch: pytest.MonkeyPatch, tiny_model: Path) -> None:
    """The CLI knows the server's base models (as a deployment's config would say)."""
    monkeypatch.setenv("TUNEFORGE_BASE_MODELS", json.dumps({TINY: str(tiny_model)}))


@pytest.mark.usefixtures("base_models_env")
@pytest.mark.parametrize("case", sorted(CASES))
def test_import_refuses_a_hostile_bundle_and_leaves_nothing(
    quiet_server: LiveServer, bundles: dict[str, Path], tmp_path: Path, case: str
) -> None:
    hostile, marker = make(case, bundles, tmp_path)
    models = quiet_server.state.layout.models
    before = tree(models)
    result = import_bundle(quiet_server, hostile, f"hostile-{case}")
    assert result.code == 2, result
    assert "Traceback" not in result.stderr, result
    assert len(result.stderr.strip().splitlines()) <= 3, result  # one clear message
    assert tree(models) == before, f"refused import left {tree(models) - before}"
    assert secret(tmp_path) not in data_files_text(quiet_server.settings.data_dir)
    with quiet_server.http(quiet_server.key("acme")) as client:
        assert client.get(f"/v1/models/hostile-{case}").status_code == 404
    assert marker is None or not marker.exists(), "the pickle was unpickled"


def test_import_refuses_an_empty_project(quiet_server: LiveServer, bundle: Path) -> None:
    models = quiet_server.state.layout.models
    before = tree(models)
    result = import_bundle(quiet_server, bundle, "no-project", project="")
    assert result.code == 2, result
    assert "project" in result.stderr.lower(), result
    assert tree(models) == before
    with quiet_server.state.sessions() as session:
        from tuneforge.jobs.tables import FineTunedModel

        assert session.get(FineTunedModel, "no-project") is None


@pytest.mark.usefixtures("base_models_env")
@pytest.mark.parametrize("source", ["full", "lora"])
def test_import_still_takes_an_honest_bundle(
    quiet_server: LiveServer, bundles: dict[str, Path], source: str
) -> None:
    """The checks refuse only what they should."""
    name = f"honest-{source}"
    result = import_bundle(quiet_server, bundles[source], name)
    assert result.code == 0, result
    with quiet_server.http(quiet_server.key("acme")) as client:
        response = client.post("/v1/classify", json={"model": name, "input": "good"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("case", LOAD_CASES)
def test_a_registered_model_that_cannot_load_answers_503(
    quiet_server: LiveServer, bundles: dict[str, Path], tmp_path: Path, case: str
) -> None:
    """The bundle placed in the data directory and registered without ``import``."""
    hostile, marker = make(case, bundles, tmp_path)
    model_id = place_model(quiet_server, hostile)
    with quiet_server.http(quiet_server.key("acme")) as client:
        for _ in range(2):  # the second request finds the failure remembered, or retries
            for path, body in (
                ("/v1/classify", {"model": model_id, "input": ["good", LONG_TEXT]}),
                (
                    "/v1/chat/completions",
                    {"model": model_id, "messages": [{"role": "user", "content": LONG_TEXT}]},
                ),
            ):
                response = client.post(path, json=body)
                if case == "d-max-length-100000" and response.status_code == 200:
                    continue  # clamping max_length to the model's limit is a fine answer
                error = assert_error(response, 503, "model_unavailable")
                assert "could not be loaded" in error["message"], error
                assert_clean_message(error["message"])
    assert marker is None or not marker.exists(), "the pickle was unpickled"

"""Property-based fuzzing of the OpenAPI schema (schemathesis) against a real server.

Every operation gets valid and invalid requests (and, where a path names an object, requests
about real objects), authenticated with a valid key. No response may be a 5xx, and every
response must match what the schema documents: status code, content type and body.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tests.server.live import TINY, LiveServer, live_server, server_settings

from conftest import sentiment_rows, write_csv
from tuneforge.jobs.tables import FineTunedModel
from tuneforge.server.app import create_app
from tuneforge.server.settings import Settings

pytestmark = pytest.mark.live  # real processes: a uvicorn server, workers

MAX_EXAMPLES = 20  # per operation and strategy kind
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# 503 is what a readiness probe answers when not ready (documented); no other 5xx anywhere
READINESS_STATUSES = {("GET", "/readyz"): {503}}
# Operations no fuzzed request can succeed on here: no trained model to classify with, the
# aliased model cannot be deleted, the alias has no history, generated uploads have no
# supported extension.
NO_SUCCESS = {
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/classify"),
    ("DELETE", "/v1/models/{model}"),
    ("POST", "/v1/aliases/{name}/rollback"),
    ("POST", "/v1/files"),
}
OPERATIONS = sorted(
    (method.upper(), path)
    for path, ops in create_app(Settings(data_dir=Path("unused"), workers=0))
    .openapi()["paths"]
    .items()
    for method in ops
)


class Fuzz:
    """The server, a key, and real objects for path parameters to name."""

    def __init__(self, server: LiveServer, tmp: Path) -> None:
        self.server = server
        self.key = server.key("fuzz")
        content = write_csv(tmp / "train.csv", sentiment_rows(30)).read_bytes()
        with server.http(self.key) as c:

            def upload() -> str:
                files = {"file": ("train.csv", content)}
                return c.post("/v1/files", files=files, data={"purpose": "fine-tune"}).json()["id"]

            def job() -> str:
                body = {"model": TINY, "training_file": self.file_id}
                return c.post("/v1/fine_tuning/jobs", json=body).json()["id"]

            self.file_id, self.victim_file = upload(), upload()  # the second one is deleted
            self.job_id, self.victim_job = job(), job()  # the second one is cancelled
            # a fine-tuned model row (no bundle: nothing here classifies with it) and an alias
            self.model_id = f"ft:{TINY}:fuzz::{self.job_id}"
            with server.state.sessions.begin() as session:
                session.add(
                    FineTunedModel(
                        id=self.model_id,
                        project="fuzz",
                        base_model=TINY,
                        job_id=self.job_id,
                        bundle=f"models/{self.job_id}",
                        created_at=int(time.time()),
                    )
                )
            assert c.put("/v1/aliases/production", json={"model": self.model_id}).is_success
        self.schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")

    def known_path_parameters(self, method: str, path: str) -> dict[str, str]:
        known = {
            "file_id": self.victim_file if method == "DELETE" else self.file_id,
            "fine_tuning_job_id": self.victim_job if path.endswith("/cancel") else self.job_id,
            "model": self.model_id,
            "name": "production",
        }
        return {name: value for name, value in known.items() if f"{{{name}}}" in path}


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Fuzz]:
    tmp = tmp_path_factory.mktemp("fuzz")
    # no worker: created jobs stay queued; a small upload limit to reach the 413 path
    settings_ = server_settings(tmp, tiny_model, workers=0, max_upload_bytes=16 * 1024)
    with live_server(settings_) as server:
        yield Fuzz(server, tmp)


def test_the_schema_lists_every_operation(fuzz: Fuzz):
    served = sorted(
        (op.method.upper(), op.path)
        for op in (result.ok() for result in fuzz.schema.get_all_operations())
    )
    assert served == OPERATIONS
    assert len(OPERATIONS) >= 25


def _strategies(fuzz: Fuzz, operation) -> list[st.SearchStrategy]:
    strategies = [operation.as_strategy(generation_mode=GenerationMode.POSITIVE)]
    has_input = bool(list(operation.iter_parameters())) or operation.body
    if has_input:
        strategies.append(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    known = fuzz.known_path_parameters(operation.method.upper(), operation.path)
    if known:
        strategies.append(operation.as_strategy(path_parameters=known))
    if (operation.method.upper(), operation.path) == ("PUT", "/v1/aliases/{name}"):

        def real_model(case: Any) -> Any:
            if isinstance(case.body, dict):
                case.body = {**case.body, "model": fuzz.model_id}
            return case

        strategies.append(operation.as_strategy(path_parameters=known).map(real_model))
    if (operation.method.upper(), operation.path) == ("POST", "/v1/fine_tuning/jobs"):
        # reach past "no such model/file": real ones, fuzzed hyperparameters and method

        def real_references(case: Any) -> Any:
            if isinstance(case.body, dict):
                case.body = {**case.body, "model": TINY, "training_file": fuzz.file_id}
                case.body.pop("validation_file", None)
                case.body.pop("integrations", None)
            return case

        strategies.append(operation.as_strategy().map(real_references))
    return strategies


@pytest.mark.parametrize("operation", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_fuzz_operation(fuzz: Fuzz, operation: tuple[str, str]):
    method, path = operation
    op = fuzz.schema[path][method]
    headers = {"Authorization": f"Bearer {fuzz.key}"}
    allowed_5xx = READINESS_STATUSES.get(operation, set())
    checks = [c for c in CHECKS if not (allowed_5xx and c is not_a_server_error)]
    statuses: dict[int, int] = {}
    for strategy in _strategies(fuzz, op):

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case) -> None:
            response = case.call(base_url=fuzz.server.url, headers=headers, timeout=60)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            case.validate_response(response, checks=checks)

        # Unsatisfiable: no invalid request exists for an operation without inputs
        with contextlib.suppress(Unsatisfiable):
            run()
    assert all(status < 500 or status in allowed_5xx for status in statuses), statuses
    if operation not in NO_SUCCESS:  # the fuzzing got past validation and lookups
        assert any(200 <= status < 300 for status in statuses), statuses

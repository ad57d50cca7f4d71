"""Authentication and authorisation of every endpoint, on the real app and SQLite file.

The routes come from the app itself: an endpoint added without an entry in ``REQUIRED``
fails ``test_every_route_is_covered``, so a new endpoint cannot escape the matrix.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fastapi.routing
import httpx
import pytest
from tests.server.api import ApiServer, api_server
from tests.server.live import TINY, server_settings

from conftest import run_cli, sentiment_rows, write_csv
from tuneforge.jobs.tables import File, FineTunedModel, Job
from tuneforge.server.app import create_app
from tuneforge.server.auth import SCOPES, create_key, revoke_key
from tuneforge.server.settings import Settings

PUBLIC = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/docs",
    "/docs/oauth2-redirect",
    "/openapi.json",
    "/redoc",
}
READ = {"train", "infer"}
# (method, path) -> the scopes that admit a key (any one of them).
REQUIRED: dict[tuple[str, str], set[str]] = {
    ("POST", "/v1/files"): {"train"},
    ("GET", "/v1/files"): {"train"},
    ("GET", "/v1/files/{file_id}"): {"train"},
    ("DELETE", "/v1/files/{file_id}"): {"train"},
    ("GET", "/v1/files/{file_id}/content"): {"train"},
    ("POST", "/v1/fine_tuning/jobs"): {"train"},
    ("GET", "/v1/fine_tuning/jobs"): {"train"},
    ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}"): {"train"},
    ("POST", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel"): {"train"},
    ("POST", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/pause"): {"train"},
    ("POST", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/resume"): {"train"},
    ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events"): {"train"},
    ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints"): {"train"},
    ("GET", "/v1/models"): READ,
    ("GET", "/v1/models/{model}"): READ,
    ("DELETE", "/v1/models/{model}"): {"train"},
    ("GET", "/v1/aliases"): READ,
    ("GET", "/v1/aliases/{name}"): READ,
    ("PUT", "/v1/aliases/{name}"): {"admin"},
    ("POST", "/v1/aliases/{name}/rollback"): {"admin"},
    ("POST", "/v1/chat/completions"): {"infer"},
    ("POST", "/v1/classify"): {"infer"},
}
# Routes that list the caller's own objects (another project sees none of ours).
LISTS = {
    ("GET", "/v1/files"): "data",
    ("GET", "/v1/fine_tuning/jobs"): "data",
    ("GET", "/v1/models"): "data",
    ("GET", "/v1/aliases"): "data",
}
# What another project's key (all scopes) gets from a route naming our objects.
CROSS_PROJECT_STATUS = {("POST", "/v1/files"): 200, **{route: 200 for route in LISTS}}


def app_routes() -> list[tuple[str, str]]:
    """Every (method, path template) the app serves, the public ones included."""
    app = create_app(Settings(data_dir=Path("unused"), workers=0))
    # FastAPI >= 0.130 keeps included routers lazily; iter_route_contexts flattens them.
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    routes = []
    for route in flatten(app.routes) if flatten else app.routes:
        path = getattr(route, "path_format", None) or route.path
        for method in sorted(getattr(route, "methods", None) or ()):
            if method != "HEAD":
                routes.append((method, path))
    assert len(set(routes)) == len(routes), routes
    return routes


ROUTES = sorted(r for r in app_routes() if r[1] not in PUBLIC)


def assert_error(response: httpx.Response, status: int, type_: str, code: str | None = None):
    """The response is the OpenAI error envelope with this status, type (and code)."""
    assert response.status_code == status, (response.request.url, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["type"] == type_, error
    assert isinstance(error["message"], str) and error["message"], error
    if code is not None:
        assert error["code"] == code, error
    return error


# ------------------------------------------------------------------ the server and objects


@dataclass
class World:
    """A server, project acme's objects, and keys of every kind."""

    server: ApiServer
    owner: str  # acme, all scopes
    file_id: str
    job_id: str
    model_id: str
    alias: str
    revoked: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("auth")
    # every route is called with invalid and revoked keys from one address: far more than
    # the invalid-key limit allows (tests/server/test_auth_rate_limit.py covers that limit)
    settings = server_settings(tmp, tiny_model, workers=0, invalid_key_rate_limit_per_minute=0)
    with api_server(settings) as server:
        owner = server.key("acme")
        csv = write_csv(tmp / "train.csv", sentiment_rows(30)).read_bytes()
        file_id = server.upload(owner, "train.csv", csv)
        with server.http(owner) as client:
            job = client.post(
                "/v1/fine_tuning/jobs", json={"model": TINY, "training_file": file_id}
            ).json()
            assert job["status"] == "queued", job  # no worker: it stays queued
            # A fine-tuned model row (training one is the inference tests' business).
            model_id = server.add_model(job["id"], f"models/{job['id']}")
            alias = client.put("/v1/aliases/production", json={"model": model_id})
            assert alias.status_code == 200, alias.text
        with server.state.sessions.begin() as session:
            row, revoked = create_key(session, "acme", list(SCOPES))
            session.flush()
            assert revoke_key(session, row.id)
        yield World(server, owner, file_id, job["id"], model_id, "production", revoked)


def request_args(world: World, method: str, path: str) -> tuple[str, dict]:
    """A well-formed request to a route about acme's objects: (url, httpx kwargs)."""
    url = path.format(
        file_id=world.file_id,
        fine_tuning_job_id=world.job_id,
        model=world.model_id,
        name=world.alias,
    )
    bodies = {
        ("POST", "/v1/files"): {
            "files": {"file": ("more.csv", b"text,label\ngood film,positive\n")},
            "data": {"purpose": "fine-tune"},
        },
        ("POST", "/v1/fine_tuning/jobs"): {"json": {"model": TINY, "training_file": world.file_id}},
        ("PUT", "/v1/aliases/{name}"): {"json": {"model": world.model_id}},
        ("POST", "/v1/chat/completions"): {
            "json": {"model": world.model_id, "messages": [{"role": "user", "content": "good"}]}
        },
        ("POST", "/v1/classify"): {"json": {"model": world.model_id, "input": "good"}},
    }
    return url, bodies.get((method, path), {})


def call(client: httpx.Client, world: World, route: tuple[str, str]) -> httpx.Response:
    url, kwargs = request_args(world, *route)
    return client.request(route[0], url, **kwargs)


def acme_state(world: World) -> dict:
    """What must not change when others knock: acme's objects."""
    with world.server.state.sessions() as session:
        file = session.get(File, world.file_id)
        job = session.get(Job, world.job_id)
        model = session.get(FineTunedModel, world.model_id)
        state = {
            "file_deleted": file.deleted,
            "file_on_disk": world.server.state.layout.file_path(file.storage_name).is_file(),
            "job": job.status,
            "model_deleted": model.deleted,
        }
    with world.server.http(world.owner) as client:
        state["alias"] = client.get("/v1/aliases/production").json()
    return state


# ------------------------------------------------------------------ the matrix


def test_every_route_is_covered():
    assert set(ROUTES) == set(REQUIRED), (
        "a route was added or removed: give it its scopes in REQUIRED "
        f"(missing: {set(ROUTES) - set(REQUIRED)}, stale: {set(REQUIRED) - set(ROUTES)})"
    )
    # the OpenAPI document names the same operations (nothing mounted out of sight)
    schema = create_app(Settings(data_dir=Path("unused"), workers=0)).openapi()
    documented = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    assert documented - {("GET", p) for p in PUBLIC} == set(ROUTES)
    for method, path in ROUTES:
        assert schema["paths"][path][method.lower()]["security"] == [{"HTTPBearer": []}]


@pytest.mark.parametrize("route", ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_route_requires_a_valid_key(world: World, route: tuple[str, str]):
    before = acme_state(world)
    server = world.server
    for label, headers in [
        ("no key", {}),
        ("empty bearer", {"Authorization": "Bearer"}),
        ("not bearer", {"Authorization": f"Basic {world.owner}"}),
        ("unknown key", {"Authorization": "Bearer tf-not-a-real-key"}),
        ("key with a typo", {"Authorization": f"Bearer {world.owner[:-1]}x"}),
        ("revoked key", {"Authorization": f"Bearer {world.revoked}"}),
    ]:
        with server.http(None, headers=headers) as client:
            response = call(client, world, route)
        error = assert_error(response, 401, "authentication_error")
        assert error["code"] in {"missing_api_key", "invalid_api_key"}, (label, error)
        assert world.owner not in response.text
    assert acme_state(world) == before


@pytest.mark.parametrize("route", ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_route_requires_its_scope(world: World, route: tuple[str, str]):
    before = acme_state(world)
    admitted = REQUIRED[route]
    lacking = sorted(set(SCOPES) - admitted)
    assert lacking, route
    # acme's own key with every scope but the needed one(s): 403, nothing happens
    with world.server.http(world.server.key("acme", ",".join(lacking))) as client:
        error = assert_error(call(client, world, route), 403, "permission_error")
    assert error["code"] == "insufficient_scope"
    assert acme_state(world) == before
    # a key holding just one admitted scope passes the check (project carol: harmless)
    for scope in sorted(admitted):
        with world.server.http(world.server.key("carol", scope)) as client:
            response = call(client, world, route)
        assert response.status_code not in (401, 403), (scope, response.text)
    assert acme_state(world) == before


@pytest.mark.parametrize("route", ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_route_hides_other_projects_objects(world: World, route: tuple[str, str]):
    before = acme_state(world)
    with world.server.http(world.server.key("bravo", "train,infer,admin")) as client:
        response = call(client, world, route)
    expected = CROSS_PROJECT_STATUS.get(route, 404)
    if expected == 404:
        # the same answer as for an object that does not exist: nothing leaks
        error = assert_error(response, 404, "invalid_request_error")
        assert error["code"] in {"not_found", "model_not_found"}, error
    else:
        assert response.status_code == expected, response.text
    if route in LISTS:
        listed = json.dumps(response.json()[LISTS[route]])
        for acme_id in (world.file_id, world.job_id, world.model_id, world.alias):
            assert acme_id not in listed
        assert '"owned_by": "acme"' not in listed
    assert acme_state(world) == before


def test_other_projects_new_objects_stay_invisible_to_the_owner(world: World):
    with world.server.http(world.server.key("delta", "train")) as client:
        mine = client.post(
            "/v1/files",
            files={"file": ("delta.csv", b"text,label\ngood,positive\n")},
            data={"purpose": "fine-tune"},
        ).json()["id"]
        assert [f["id"] for f in client.get("/v1/files").json()["data"]] == [mine]
    with world.server.http(world.owner) as client:
        assert mine not in [f["id"] for f in client.get("/v1/files").json()["data"]]
        assert_error(client.get(f"/v1/files/{mine}"), 404, "invalid_request_error", "not_found")
        assert world.file_id in [f["id"] for f in client.get("/v1/files").json()["data"]]


def test_public_endpoints_need_no_key(world: World):
    with world.server.http(None) as client:
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
            assert client.get(path).status_code == 200, path
        # an unknown path answers 404 with the envelope, a wrong method 405
        assert_error(client.get("/v1/nothing"), 404, "invalid_request_error", "not_found")
    with world.server.http(world.owner) as client:
        assert_error(client.patch("/v1/files"), 405, "invalid_request_error", "method_not_allowed")


# ------------------------------------------------------------------ the keys CLI


def _db_bytes(data_dir: Path) -> bytes:
    files = sorted(data_dir.glob("tuneforge.db*"))
    assert any(f.name == "tuneforge.db" for f in files), files
    return b"".join(f.read_bytes() for f in files if f.is_file())


def test_cli_keys_create_list_revoke(tmp_path: Path, tiny_model: Path):
    settings = server_settings(tmp_path, tiny_model, workers=0)
    data = settings.data_dir
    created = run_cli(
        "keys", "create", "--project", "acme", "--scopes", "train,infer", "--name", "ci",
        "--data-dir", data,
    )  # fmt: skip
    assert created.code == 0, created
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("tf-") and len(key) > 40, created
    assert key not in created.stderr
    assert "acme" in created.stderr

    raw = _db_bytes(data)
    assert key.encode() not in raw, "the key itself must never be stored"
    assert hashlib.sha256(key.encode()).hexdigest().encode() in raw

    listed = run_cli("keys", "list", "--json", "--project", "acme", "--data-dir", data)
    assert listed.code == 0, listed
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(records) == 1 and key not in listed.stdout
    record = records[0]
    assert record["project"] == "acme" and record["name"] == "ci"
    assert record["scopes"] == "infer,train" and record["revoked"] is False
    assert key.startswith(record["prefix"])

    with api_server(settings) as server, server.http(key) as client:
        assert client.get("/v1/files").status_code == 200
        # train,infer but not admin
        assert_error(client.put("/v1/aliases/x", json={"model": "m"}), 403, "permission_error")
        revoked = run_cli("keys", "revoke", record["id"], "--data-dir", data)
        assert revoked.code == 0, revoked
        assert_error(client.get("/v1/files"), 401, "authentication_error", "invalid_api_key")
        assert_error(
            client.post("/v1/classify", json={"model": "m", "input": "x"}),
            401,
            "authentication_error",
        )

    again = run_cli("keys", "list", "--json", "--data-dir", data)
    assert json.loads(again.stdout.splitlines()[0])["revoked"] is True
    assert key.encode() not in _db_bytes(data)


def test_cli_keys_refuses_bad_input(tmp_path: Path):
    data = tmp_path / "data"
    bad_scope = run_cli(
        "keys", "create", "--project", "acme", "--scopes", "root", "--data-dir", data
    )
    assert bad_scope.code == 2 and "root" in bad_scope.stderr, bad_scope
    bad_project = run_cli("keys", "create", "--project", "../x", "--data-dir", data)
    assert bad_project.code == 2 and "project" in bad_project.stderr, bad_project
    unknown = run_cli("keys", "revoke", "key-nope", "--data-dir", data)
    assert unknown.code == 2 and "key-nope" in unknown.stderr, unknown
    assert bad_scope.stdout == bad_project.stdout == ""

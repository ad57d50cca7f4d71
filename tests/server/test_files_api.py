"""``/v1/files`` on the app in process (``TestClient``): size limits while streaming, hostile
names, the round trip, and files that jobs still need."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from tests.server.api import api_server
from tests.server.live import TINY, LiveServer, chat_jsonl, server_settings

from conftest import sentiment_rows, write_csv
from tuneforge.jobs.status import JobStatus
from tuneforge.jobs.tables import Job

LIMIT = 4096  # bytes of a whole upload request
BOUNDARY = b"tuneforge-test-boundary"


def assert_error(response: httpx.Response, status: int, code: str, param: str | None = None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error", error
    assert error["code"] == code, error
    assert error["param"] == param, error
    return error


def multipart(filename: bytes, content: bytes, purpose: bytes = b"fine-tune") -> bytes:
    """A multipart body written by hand, so a file name reaches the server byte for byte."""
    return (
        b"--" + BOUNDARY + b"\r\n"
        b'Content-Disposition: form-data; name="purpose"\r\n\r\n' + purpose + b"\r\n"
        b"--" + BOUNDARY + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n"
        b"--" + BOUNDARY + b"--\r\n"
    )


MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY.decode()}"}
CSV = b"text,label\ngood film,positive\nbad film,negative\n"


def attachment_name(response: httpx.Response) -> str:
    """The file name of a ``Content-Disposition: attachment`` header (RFC 6266)."""
    value = response.headers["content-disposition"]
    assert value.startswith("attachment;"), value
    if "filename*=utf-8''" in value:
        return unquote(value.split("filename*=utf-8''", 1)[1])
    return value.split('filename="', 1)[1].rstrip('"')


def tree(root: Path) -> set[str]:
    """Every file under ``root`` (relative paths), hidden and partial ones included."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[LiveServer]:
    # the data directory sits two levels below the temporary root, so "../../x" would land
    # inside the root where the tests can see it
    root = tmp_path_factory.mktemp("files")
    settings = server_settings(root / "srv", tiny_model, workers=0, max_upload_bytes=LIMIT)
    with api_server(settings) as api:
        yield api


@pytest.fixture(scope="module")
def key(server: LiveServer) -> str:
    return server.key("acme", "train")


@pytest.fixture()
def client(server: LiveServer, key: str) -> Iterator[httpx.Client]:
    with server.http(key) as c:
        yield c


def upload(client: httpx.Client, name: str, content: bytes, purpose: str = "fine-tune"):
    return client.post("/v1/files", files={"file": (name, content)}, data={"purpose": purpose})


def stored(server: LiveServer) -> set[str]:
    return {p.name for p in server.state.layout.files.iterdir()}


# ------------------------------------------------------------------ the round trip


def test_upload_list_retrieve_content_delete_roundtrip(server: LiveServer, client, tmp_path):
    content = write_csv(tmp_path / "reviews.csv", sentiment_rows(20)).read_bytes()
    content += "caf\u00e9 cr\u00e8me,positive\r\n".encode()  # non-ASCII and CRLF survive as is
    before = stored(server)

    created = upload(client, "reviews.csv", content)
    assert created.status_code == 200, created.text
    f = created.json()
    assert f["id"].startswith("file-") and f["object"] == "file"
    assert f["bytes"] == len(content) and f["filename"] == "reviews.csv"
    assert f["purpose"] == "fine-tune" and f["status"] == "processed"
    assert f["status_details"] is None
    assert f["tuneforge"]["valid"] is True and f["tuneforge"]["format"] == "csv"
    assert f["tuneforge"]["rows"] == 21
    assert f["tuneforge"]["labels"] == {"positive": 11, "negative": 10}
    # stored under its id, never under its name
    assert stored(server) - before == {f"{f['id']}.csv"}
    assert server.state.layout.file_path(f"{f['id']}.csv").read_bytes() == content

    assert client.get(f"/v1/files/{f['id']}").json() == f
    listed = client.get("/v1/files").json()
    assert listed["object"] == "list" and f in listed["data"]
    assert listed["first_id"] == listed["data"][0]["id"]
    assert listed["last_id"] == listed["data"][-1]["id"]

    downloaded = client.get(f"/v1/files/{f['id']}/content")
    assert downloaded.status_code == 200
    assert downloaded.content == content
    assert attachment_name(downloaded) == "reviews.csv"

    deleted = client.delete(f"/v1/files/{f['id']}")
    assert deleted.json() == {"id": f["id"], "object": "file", "deleted": True}
    assert stored(server) == before
    assert f["id"] not in [x["id"] for x in client.get("/v1/files").json()["data"]]
    for response in (
        client.get(f"/v1/files/{f['id']}"),
        client.get(f"/v1/files/{f['id']}/content"),
        client.delete(f"/v1/files/{f['id']}"),
    ):
        assert_error(response, 404, "not_found")


def test_chat_jsonl_and_invalid_files_are_described(client, tmp_path):
    chat = upload(client, "chat.jsonl", chat_jsonl(tmp_path / "chat.jsonl", 10).read_bytes()).json()
    assert chat["tuneforge"]["format"] == "chat" and chat["tuneforge"]["rows"] == 10
    assert chat["status_details"] is None

    # a file that is not valid training data is kept, with what is wrong (by name and line)
    broken = upload(client, "broken.csv", b"text,label\ngood,positive\nmeh,\n").json()
    assert broken["status"] == "processed" and broken["tuneforge"] == {"valid": False}
    assert "broken.csv:3" in broken["status_details"]
    assert "empty label" in broken["status_details"]
    assert "/" not in broken["status_details"].split("broken.csv")[0], "no server path shown"


def test_list_pages_and_filters(server: LiveServer):
    with server.http(server.key("pager", "train")) as client:
        ids = [upload(client, f"p{i}.csv", CSV).json()["id"] for i in range(5)]
        full = client.get("/v1/files").json()
        assert sorted(x["id"] for x in full["data"]) == sorted(ids) and not full["has_more"]
        order = [x["id"] for x in full["data"]]
        created = [x["created_at"] for x in full["data"]]
        assert created == sorted(created, reverse=True)  # newest first by default

        page = client.get("/v1/files", params={"limit": 2}).json()
        assert [x["id"] for x in page["data"]] == order[:2] and page["has_more"]
        rest = client.get("/v1/files", params={"limit": 2, "after": page["last_id"]}).json()
        assert [x["id"] for x in rest["data"]] == order[2:4] and rest["has_more"]
        last = client.get("/v1/files", params={"limit": 2, "after": rest["last_id"]}).json()
        assert [x["id"] for x in last["data"]] == order[4:] and not last["has_more"]

        asc = client.get("/v1/files", params={"order": "asc"}).json()
        assert [x["created_at"] for x in asc["data"]] == sorted(created)
        assert client.get("/v1/files", params={"purpose": "fine-tune-results"}).json()["data"] == []
        assert client.get("/v1/files", params={"after": "file-unknown"}).json()["data"] == []
        for bad in ({"limit": 0}, {"order": "sideways"}):
            response = client.get("/v1/files", params=bad)
            assert response.status_code == 400 and response.json()["error"]["param"] in bad


# ------------------------------------------------------------------ refused uploads


def test_declared_content_length_over_the_limit_is_refused_before_storing(server, client):
    before = stored(server)
    response = upload(client, "big.csv", b"text,label\n" + b"good film,positive\n" * 400)
    assert int(response.request.headers["content-length"]) > LIMIT
    error = assert_error(response, 413, "file_too_large", "file")
    assert str(LIMIT) in error["message"]
    assert stored(server) == before
    # the server is fine afterwards
    assert client.get("/v1/files").status_code == 200


@pytest.mark.parametrize("size", [LIMIT + 1, 50 * LIMIT])
def test_chunked_body_over_the_limit_is_cut_off(server: LiveServer, client, size: int):
    body = multipart(b"big.csv", b"text,label\n" + b"x" * size + b",positive\n")

    def chunks():
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    before = stored(server)
    response = client.post("/v1/files", content=chunks(), headers=MULTIPART)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_error(response, 413, "file_too_large", "file")
    assert stored(server) == before
    assert client.get("/v1/files").status_code == 200


def test_chunked_body_under_the_limit_is_stored(server: LiveServer, client):
    body = multipart(b"small.csv", CSV)
    response = client.post("/v1/files", content=iter([body[:100], body[100:]]), headers=MULTIPART)
    assert response.status_code == 200, response.text
    f = response.json()
    assert f["bytes"] == len(CSV) and f"{f['id']}.csv" in stored(server)
    assert client.get(f"/v1/files/{f['id']}/content").content == CSV


@pytest.mark.parametrize(
    "name",
    [b"model.exe", b"train.csv.sh", b"no_extension", b"../../etc/passwd", b"archive.zip"],
)
def test_unsupported_extension_is_refused(server: LiveServer, client, name: bytes):
    before = stored(server)
    response = client.post("/v1/files", content=multipart(name, CSV), headers=MULTIPART)
    error = assert_error(response, 400, "unsupported_file", "file")
    assert ".csv" in error["message"]  # says what is accepted
    assert stored(server) == before


def test_empty_file_is_refused_and_nothing_is_left(server: LiveServer, client):
    before = stored(server)
    assert_error(upload(client, "empty.csv", b""), 400, "empty_file", "file")
    assert stored(server) == before  # no partial file either


def test_unknown_purpose_is_refused(server: LiveServer, client):
    before = stored(server)
    assert_error(
        upload(client, "t.csv", CSV, purpose="assistants"), 400, "invalid_purpose", "purpose"
    )
    response = client.post("/v1/files", files={"file": ("t.csv", CSV)})  # no purpose at all
    assert response.status_code == 400 and response.json()["error"]["param"] == "purpose"
    response = client.post("/v1/files", data={"purpose": "fine-tune"})  # no file at all
    assert response.status_code == 400 and response.json()["error"]["param"] == "file"
    assert stored(server) == before


# ------------------------------------------------------------------ hostile file names


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        (b"../../etc/passwd.csv", "passwd.csv"),
        (b"../../escape.csv", "escape.csv"),
        (b"..\\..\\x.csv", "x.csv"),
        (b"/tmp/absolute.csv", "absolute.csv"),
        (b"nul\x00byte.csv", "nulbyte.csv"),
        (b"ctl\x01\x1b[31mred\x7f.csv", "ctl_31mred.csv"),
        (b"tab\there.csv", "tabhere.csv"),
        ("\u202egnp.csv".encode(), "gnp.csv"),
        (b"$(reboot);`id`.csv", "_(reboot)__id_.csv"),
    ],
)
def test_hostile_file_names_are_harmless(server: LiveServer, client, name: bytes, shown: str):
    root = server.settings.data_dir.parent.parent
    before = tree(root)
    response = client.post("/v1/files", content=multipart(name, CSV), headers=MULTIPART)
    assert response.status_code == 200, response.text
    f = response.json()
    assert f["filename"] == shown
    assert not any(ch in f["filename"] for ch in "/\\\x00\n\r\t\x1b")
    # exactly one new file anywhere under the temporary root: DATA_DIR/files/<id>.csv
    rel = server.state.layout.file_path(f"{f['id']}.csv").relative_to(root)
    assert tree(root) - before == {str(rel)}
    assert before - tree(root) == set()
    downloaded = client.get(f"/v1/files/{f['id']}/content")
    assert downloaded.content == CSV
    assert attachment_name(downloaded) == shown
    assert client.delete(f"/v1/files/{f['id']}").status_code == 200
    assert tree(root) == before


def test_nothing_was_written_outside_the_data_dir(server: LiveServer):
    root = server.settings.data_dir.parent.parent
    outside = {p for p in tree(root) if not p.startswith(f"srv{os.sep}data{os.sep}")}
    assert outside == set(), outside
    assert not Path("/etc/passwd.csv").exists()


# ------------------------------------------------------------------ files in use


def test_a_file_used_by_an_unfinished_job_cannot_be_deleted(server: LiveServer, client, tmp_path):
    content = write_csv(tmp_path / "t.csv", sentiment_rows(30)).read_bytes()
    train = upload(client, "t.csv", content).json()["id"]
    valid = upload(
        client, "v.csv", write_csv(tmp_path / "v.csv", sentiment_rows(10, 1)).read_bytes()
    )
    valid = valid.json()["id"]
    job = client.post(
        "/v1/fine_tuning/jobs",
        json={"model": TINY, "training_file": train, "validation_file": valid},
    ).json()
    assert job["status"] == "queued", job  # no worker on this server

    def refused(file_id: str) -> None:
        error = assert_error(client.delete(f"/v1/files/{file_id}"), 409, "file_in_use", "file_id")
        assert job["id"] in error["message"]
        assert client.get(f"/v1/files/{file_id}").status_code == 200
        assert client.get(f"/v1/files/{file_id}/content").status_code == 200

    refused(train)
    refused(valid)
    assert client.post(f"/v1/fine_tuning/jobs/{job['id']}/pause").json()["status"] == "paused"
    refused(train)
    assert client.post(f"/v1/fine_tuning/jobs/{job['id']}/resume").json()["status"] == "queued"
    store = server.state.store
    with store.sessions.begin() as session:  # as a worker would have it
        store.transition(session.get(Job, job["id"]), JobStatus.RUNNING)
    refused(train)
    refused(valid)
    assert client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    # a finished job no longer holds its files
    assert client.delete(f"/v1/files/{train}").json()["deleted"] is True
    assert client.delete(f"/v1/files/{valid}").json()["deleted"] is True
    assert client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()["training_file"] == train

"""JSON nested 5,000 levels deep is bad input, not a crash: an upload naming the line
(recorded in ``status_details``, or refused with 400 ``invalid_file``), never a 500, and
never bytes on disk without a database row (invisible and undeletable)."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import select
from tests.security.hostile import assert_clean_message, assert_error
from tests.server.live import LiveServer

from conftest import sentiment_rows

pytestmark = [pytest.mark.security, pytest.mark.live]

DEPTH = 5_000


def nested_list() -> str:
    return "[" * DEPTH + "]" * DEPTH


def nested_object() -> str:
    return '{"a": ' * DEPTH + "1" + "}" * DEPTH


def good_lines(n: int) -> list[str]:
    return [json.dumps({"text": t, "label": lab}) for t, lab in sentiment_rows(n)]


def chat_line(content: str) -> str:
    user = '{"role": "user", "content": ' + content + "}"
    return '{"messages": [' + user + ', {"role": "assistant", "content": "positive"}]}'


TEXT_NESTED = '{"text": ' + nested_list() + ', "label": "positive"}'
EXTRA_NESTED = '{"text": "good", "label": "positive", "x": ' + nested_object() + "}"
# The deep line is line 3 of each file.
FILES = {
    "text-value": [*good_lines(2), TEXT_NESTED],
    "whole-line": [*good_lines(2), nested_list()],
    "extra-key": [*good_lines(2), EXTRA_NESTED],
    "chat-content": [chat_line('"good movie"'), chat_line('"bad movie"'), chat_line(nested_list())],
}


def orphans(server: LiveServer) -> set[str]:
    """Names in the files folder that no file row (not deleted) owns, and rows whose bytes
    are missing (marked ``!``)."""
    from tuneforge.jobs.tables import File

    folder = server.state.layout.files
    on_disk = {p.name for p in folder.iterdir()} if folder.exists() else set()
    with server.state.sessions() as session:
        rows = set(session.scalars(select(File.storage_name).where(File.deleted.is_(False))))
    return (on_disk - rows) | {f"!{name}" for name in rows - on_disk}


@pytest.mark.parametrize("case", sorted(FILES))
def test_deeply_nested_jsonl_names_the_line_and_leaves_no_orphan(
    quiet_server: LiveServer, case: str
) -> None:
    content = ("\n".join(FILES[case]) + "\n" + "\n".join(good_lines(5)) + "\n").encode()
    key = quiet_server.key("acme", "train")
    with quiet_server.http(key) as client:
        response = client.post(
            "/v1/files",
            files={"file": (f"{case}.jsonl", content)},
            data={"purpose": "fine-tune"},
        )
        left = orphans(quiet_server)
        assert response.status_code in (200, 400), (response.text, f"orphans: {left}")
        assert not left, f"bytes on disk without a database row: {left}"
        if response.status_code == 400:
            message = assert_error(response, 400, "invalid_file")["message"]
        else:
            body = response.json()
            message = body["status_details"] or ""
            assert body["tuneforge"]["valid"] is False, body
            assert_clean_message(message)
        assert re.search(r"\bline 3\b|:3\b", message), message  # "line 3" or "name.jsonl:3:"
        if response.status_code == 200:  # a recorded file can be deleted, bytes and all
            deleted = client.delete(f"/v1/files/{response.json()['id']}")
            assert deleted.status_code == 200, deleted.text
            assert not orphans(quiet_server)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/classify", '{"model": "x", "input": ' + nested_list() + "}"),
        ("/v1/fine_tuning/jobs", '{"model": "x", "metadata": ' + nested_object() + "}"),
    ],
    ids=["classify", "jobs"],
)
def test_deeply_nested_request_body_is_400(quiet_server: LiveServer, path: str, body: str) -> None:
    key = quiet_server.key("acme")
    with quiet_server.http(key) as client:
        response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert_clean_message(response.json()["error"]["message"])

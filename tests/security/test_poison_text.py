"""One bad text fails only its own request: a lone UTF-16 surrogate (``"\\ud800"``, valid
JSON) is refused with 400 ``invalid_text`` before it reaches a micro-batch, so the honest
requests sharing the batch are answered; and 31 honest clients keep getting 200 while a
hostile one sends poison every 100 ms for 15 s."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.security.hostile import assert_error, place_model, raw_post
from tests.server.live import LiveServer, live_server, server_settings

from conftest import sentiment_rows, write_csv

pytestmark = [pytest.mark.security, pytest.mark.live]

SURROGATE = "\ud800"
HONEST = ["the film was good", "a bad story", "the music and the ending", "i love this movie"]


@dataclass
class Env:
    server: LiveServer
    model: str
    honest_key: str
    hostile_key: str  # same project, same model: a client passing its users' text through


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, bundle: Path) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("poison")
    settings = server_settings(tmp, tiny_model, workers=0, backend="torch")
    with live_server(settings) as server:
        model = place_model(server, bundle)
        honest, hostile = server.key("acme", "infer"), server.key("acme", "infer")
        with server.http(honest) as client:  # load the model before anything is timed
            response = client.post("/v1/classify", json={"model": model, "input": "good"})
            assert response.status_code == 200, response.text
        yield Env(server, model, honest, hostile)


def chat(model: str, *messages: dict) -> dict:
    return {"model": model, "messages": list(messages)}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


SYSTEM = {"role": "system", "content": "Classify the sentiment."}


# ---------------------------------------------------------------- one request


def test_lone_surrogate_in_classify_is_400_invalid_text(env: Env) -> None:
    with env.server.http(env.hostile_key) as client:
        one = raw_post(client, "/v1/classify", {"model": env.model, "input": SURROGATE})
        assert_error(one, 400, "invalid_text", "input")
        texts = [*HONEST[:3], f"good {SURROGATE} movie"]
        many = raw_post(client, "/v1/classify", {"model": env.model, "input": texts})
        error = assert_error(many, 400, "invalid_text")
        assert error["param"] in ("input", "input.3"), error


@pytest.mark.parametrize(
    "content",
    [f"good {SURROGATE}", [{"type": "text", "text": f"good {SURROGATE}"}]],
    ids=["string", "parts"],
)
def test_lone_surrogate_in_a_chat_message_is_400_invalid_text(env: Env, content) -> None:
    body = chat(env.model, SYSTEM, {"role": "user", "content": content})
    with env.server.http(env.hostile_key) as client:
        error = assert_error(raw_post(client, "/v1/chat/completions", body), 400, "invalid_text")
    assert error["param"].startswith("messages.1.content"), error


@pytest.mark.parametrize(
    "text",
    [
        "\ud83d\ude00 great",  # a surrogate *pair* (escaped in JSON) is one valid character
        "good\x00movie",
        "\ufeffgood",
        "e\u0301" * 5_000,
        "\u202egood\u202c",
        "good " * 19_000,
    ],
    ids=["pair", "nul", "bom", "combining", "rtl-override", "long"],
)
def test_odd_but_valid_texts_are_classified(env: Env, text: str) -> None:
    """Validation refuses what cannot be encoded, not what merely looks odd."""
    with env.server.http(env.hostile_key) as client:
        for path, body in (
            ("/v1/classify", {"model": env.model, "input": [text, HONEST[0]]}),
            ("/v1/chat/completions", chat(env.model, {"role": "user", "content": text})),
        ):
            response = raw_post(client, path, body)
            assert response.status_code == 200, response.text


def test_a_poisoned_request_does_not_fail_the_requests_batched_with_it(env: Env) -> None:
    """Honest requests and a poisoned one sent at the same instant (one micro-batch)."""

    async def burst() -> tuple[list[httpx.Response], list[httpx.Response]]:
        async with httpx.AsyncClient(base_url=env.server.url, timeout=60) as client:
            honest = [
                client.post(
                    "/v1/classify",
                    json={"model": env.model, "input": HONEST[i % len(HONEST)]},
                    headers={"Authorization": f"Bearer {env.honest_key}"},
                )
                for i in range(12)
            ]
            poison = [
                client.post(
                    path,
                    content=json.dumps(body).encode(),
                    headers={
                        "Authorization": f"Bearer {env.hostile_key}",
                        "Content-Type": "application/json",
                    },
                )
                for path, body in (
                    ("/v1/classify", {"model": env.model, "input": ["good", SURROGATE]}),
                    (
                        "/v1/chat/completions",
                        chat(env.model, {"role": "user", "content": SURROGATE}),
                    ),
                )
            ]
            results = await asyncio.gather(*honest, *poison)
        return list(results[: len(honest)]), list(results[len(honest) :])

    for _ in range(3):
        honest, poison = asyncio.run(burst())
        assert [r.status_code for r in honest] == [200] * len(honest), [r.text for r in honest]
        for response in poison:
            assert_error(response, 400, "invalid_text")


# ---------------------------------------------------------------- under load

HONEST_CLIENTS = 31
LOAD_SECONDS = 15.0
POISON_EVERY = 0.1


def poison_bodies(model: str) -> Iterator[tuple[str, bytes]]:
    """What the hostile client sends, in turn: surrogates in every place a text goes, and
    bytes that are not JSON or not UTF-8."""
    bodies: list[tuple[str, object]] = [
        ("/v1/classify", {"model": model, "input": SURROGATE}),
        ("/v1/chat/completions", chat(model, {"role": "user", "content": SURROGATE})),
        ("/v1/classify", {"model": model, "input": [*HONEST, f"x{SURROGATE}y"]}),
        (
            "/v1/chat/completions",
            chat(model, SYSTEM, {"role": "user", "content": [{"type": "text", "text": "\udfff"}]}),
        ),
    ]
    raw: list[tuple[str, bytes]] = [(p, json.dumps(b).encode()) for p, b in bodies]
    raw.append(("/v1/classify", b'{"model": "' + model.encode() + b'", "input": "\xff\xfe"}'))
    raw.append(("/v1/classify", b'{"model": "' + model.encode() + b'", "input": "\\ud800'))
    return itertools.cycle(raw)


def test_31_honest_clients_see_no_failure_while_one_client_sends_poison(
    env: Env, record_property
) -> None:
    honest: Counter[str] = Counter()
    hostile: Counter[str] = Counter()

    async def honest_client(number: int, deadline: float) -> None:
        headers = {"Authorization": f"Bearer {env.honest_key}"}
        async with httpx.AsyncClient(base_url=env.server.url, headers=headers, timeout=60) as c:
            for i in itertools.count():
                if time.monotonic() > deadline:
                    return
                text = HONEST[(number + i) % len(HONEST)]
                if (number + i) % 2:
                    path, body = "/v1/chat/completions", chat(env.model, SYSTEM, user(text))
                else:
                    inputs = text if i % 3 else [text, HONEST[number % len(HONEST)]]
                    path, body = "/v1/classify", {"model": env.model, "input": inputs}
                try:
                    response = await c.post(path, json=body)
                    honest[f"{path} {response.status_code}"] += 1
                except httpx.TransportError as exc:
                    honest[f"{path} {type(exc).__name__}"] += 1

    async def hostile_client(deadline: float) -> None:
        headers = {
            "Authorization": f"Bearer {env.hostile_key}",
            "Content-Type": "application/json",
        }
        sent = []
        async with httpx.AsyncClient(base_url=env.server.url, headers=headers, timeout=60) as c:

            async def send(path: str, content: bytes) -> None:
                try:
                    hostile[str((await c.post(path, content=content)).status_code)] += 1
                except httpx.TransportError as exc:
                    hostile[type(exc).__name__] += 1

            tick = time.monotonic()
            for path, content in poison_bodies(env.model):
                if tick > deadline:
                    break
                sent.append(asyncio.create_task(send(path, content)))
                tick += POISON_EVERY  # every 100 ms, answered or not
                await asyncio.sleep(max(0.0, tick - time.monotonic()))
            await asyncio.gather(*sent)

    async def load() -> None:
        deadline = time.monotonic() + LOAD_SECONDS
        await asyncio.gather(
            hostile_client(deadline),
            *(honest_client(n, deadline) for n in range(HONEST_CLIENTS)),
        )

    started = time.monotonic()
    asyncio.run(load())
    elapsed = time.monotonic() - started
    total = sum(honest.values())
    ok = sum(n for outcome, n in honest.items() if outcome.endswith(" 200"))
    summary = (
        f"{HONEST_CLIENTS} honest clients, {elapsed:.1f} s: {total} requests, {ok} answered 200, "
        f"{total - ok} failed {dict(honest)}; hostile: {sum(hostile.values())} requests "
        f"{dict(hostile)}"
    )
    print(summary)
    record_property("poison_load", summary)
    assert total >= HONEST_CLIENTS, summary  # every honest client got requests through
    assert ok == total, summary
    assert sum(hostile.values()) >= LOAD_SECONDS / POISON_EVERY * 0.9, summary
    assert set(hostile) <= {"400"}, summary  # every poison refused as bad input, none a 500


# ---------------------------------------------------------------- poison in a job body

JOB_POISON = {
    "metadata-key": ({"metadata": {f"team{SURROGATE}": "a"}}, "metadata"),
    "metadata-value": ({"metadata": {"team": f"a{SURROGATE}"}}, "metadata"),
    "lora-target-module": (
        {"method": {"type": "lora", "lora": {"target_modules": [f"query{SURROGATE}"]}}},
        "method.lora.target_modules",
    ),
    "wandb-tag": (
        {"integrations": [{"type": "wandb", "wandb": {"project": "p", "tags": [SURROGATE]}}]},
        "integrations.0.wandb.tags",
    ),
}


@pytest.mark.parametrize("case", sorted(JOB_POISON))
def test_lone_surrogate_in_a_job_body_is_400_and_harms_nothing(
    env: Env, tmp_path: Path, case: str
) -> None:
    # a project per case: a poisoned job stored by one case must not break the next one
    key = env.server.key(f"jobs-{case}", "train")
    data = write_csv(tmp_path / "train.csv", sentiment_rows(20)).read_bytes()
    training_file = env.server.upload(key, "train.csv", data)
    extra, param = JOB_POISON[case]
    body = {"model": "tiny-bert", "training_file": training_file, **extra}
    with env.server.http(key) as client:
        try:
            response = raw_post(client, "/v1/fine_tuning/jobs", body)
            listed = client.get("/v1/fine_tuning/jobs")
        except httpx.TransportError as exc:
            pytest.fail(f"the connection broke: {exc!r}")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"].startswith(param), response.text
    assert listed.status_code == 200, listed.text
    assert listed.json()["data"] == [], "the refused job was stored"

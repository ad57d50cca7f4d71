"""Invalid API keys are rate limited per client address: a client that keeps sending keys
that do not exist gets 429 (and no database lookup) instead of an endless stream of 401s."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from tests.server.api import api_server
from tests.server.live import server_settings


def test_invalid_keys_are_rate_limited_per_client_address(tmp_path: Path, tiny_model: Path):
    settings = server_settings(tmp_path, tiny_model, workers=0, invalid_key_rate_limit_per_minute=5)
    with api_server(settings) as server:
        key = server.key("acme", "train")
        with server.http("tf-guess", client_address="10.0.0.1") as guesser:
            assert [guesser.get("/v1/files").status_code for _ in range(5)] == [401] * 5
            limited = guesser.get("/v1/files")
            assert limited.status_code == 429, limited.text
            error = limited.json()["error"]
            assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
            assert "invalid API keys" in error["message"] and "5 per minute" in error["message"]
            assert 1 <= int(limited.headers["retry-after"]) <= 12  # one attempt per 12 s
            # a missing key is answered as such (nothing to look up)
            assert guesser.get("/v1/files", headers={"Authorization": ""}).status_code == 401
        # the address is refused before any lookup, even with a valid key, until it refills
        with server.http(key, client_address="10.0.0.1") as same_address:
            assert same_address.get("/v1/files").status_code == 429
        # other addresses are not affected
        with server.http(key, client_address="10.0.0.2") as honest:
            assert honest.get("/v1/files").status_code == 200
        with server.http("tf-typo", client_address="10.0.0.3") as typo:
            assert typo.get("/v1/files").status_code == 401
        families = text_string_to_metric_families(server.get("/metrics").text)
        samples = {(s.name, s.labels.get("kind")): s.value for f in families for s in f.samples}
        assert samples[("tuneforge_rate_limited_total", "invalid_key")] == 2
        assert samples[("tuneforge_rate_limit_per_minute", "invalid_key")] == 5


def test_valid_keys_spend_nothing_of_the_invalid_key_budget(tmp_path: Path, tiny_model: Path):
    settings = server_settings(tmp_path, tiny_model, workers=0, invalid_key_rate_limit_per_minute=2)
    with api_server(settings) as server:
        key = server.key("acme", "train")
        with server.http(key, client_address="10.0.0.9") as client:
            assert all(client.get("/v1/files").status_code == 200 for _ in range(10))
        with server.http("tf-wrong", client_address="10.0.0.9") as client:
            assert [client.get("/v1/files").status_code for _ in range(3)] == [401, 401, 429]

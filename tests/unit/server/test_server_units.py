"""Pure pieces of the server: display names, rate limiting, run configs, metrics CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.errors import InputError
from tuneforge.jobs.results import metrics_csv
from tuneforge.jobs.spec import build_run_config, resolve_paths
from tuneforge.server.auth import hash_key, parse_scopes
from tuneforge.server.ratelimit import RateLimiter
from tuneforge.server.services.files import display_name


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\x.csv", "x.csv"),
        ("a\x00b\x1f.csv", "ab.csv"),
        ("  ..  ", "upload"),
        ("", "upload"),
        (None, "upload"),
        ("reviews (v2).jsonl", "reviews (v2).jsonl"),
        ("<script>.csv", "_script_.csv"),
    ],
)
def test_display_name_is_a_harmless_basename(raw, shown):
    assert display_name(raw) == shown
    assert "/" not in display_name(raw) and "\\" not in display_name(raw)


def test_rate_limiter_refuses_over_the_burst_and_says_when_to_retry(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("tuneforge.server.ratelimit.time.monotonic", lambda: clock[0])
    limiter = RateLimiter(per_minute=3)
    assert [limiter.acquire("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("k")
    assert wait == pytest.approx(20.0)  # one token per 20 s at 3/min
    assert RateLimiter.retry_after(wait) == "20"
    assert limiter.acquire("other") == 0.0  # buckets are per key
    clock[0] += 20.0
    assert limiter.acquire("k") == 0.0
    assert RateLimiter(0).acquire("k") == 0.0  # 0 disables


def test_build_run_config_maps_openai_hyperparameters():
    config = build_run_config(
        training_file="files/file-a.jsonl",
        validation_file=None,
        base_model="default",
        output="models/ftjob-x",
        method_type="supervised",
        method_options={},
        hyperparameters={"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 0.5},
        seed=3,
    )
    assert config.method.name == "full"
    assert config.train.epochs == 2 and config.train.batch_size == "auto"
    assert config.train.learning_rate_multiplier == 0.5 and config.train.seed == 3
    lora = build_run_config(
        training_file="files/a.csv",
        validation_file="files/b.csv",
        base_model="/m",
        output="models/j",
        method_type="lora",
        method_options={"lora_r": 4},
        hyperparameters={"max_length": 64, "checkpoint_every": 5},
        seed=0,
    )
    assert lora.method.name == "lora" and lora.method.lora_r == 4
    assert lora.model.max_length == 64 and lora.train.checkpoint_every == 5
    resolved = resolve_paths(lora.to_dict(), "/data")
    assert resolved["data"]["train"] == "/data/files/a.csv"
    assert resolved["data"]["validation"] == "/data/files/b.csv"
    assert resolved["output"] == "/data/models/j"
    with pytest.raises(InputError):
        build_run_config(
            training_file="f",
            validation_file=None,
            base_model="m",
            output="o",
            method_type="full",
            method_options={},
            hyperparameters={"warmup_ratio": 1.5},
            seed=0,
        )


def test_metrics_csv_joins_steps_and_evaluations(tmp_path: Path):
    events = [
        {"type": "start", "total_steps": 3},
        {"type": "step", "step": 1, "epoch": 0.33, "loss": 0.7, "lr": 1e-4},
        {"type": "step", "step": 2, "epoch": 0.67, "loss": 0.6, "lr": 9e-5},
        {
            "type": "eval",
            "step": 2,
            "metrics": {"log_loss": 0.5, "accuracy": 0.75, "macro_f1": 0.7},
        },
        {"type": "step", "step": 3, "epoch": 1.0, "loss": 0.4, "lr": 0.0},
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events) + '{"torn', encoding="utf-8")
    lines = metrics_csv(path).strip().splitlines()
    assert (
        lines[0] == "step,epoch,train_loss,learning_rate,valid_loss,valid_accuracy,valid_macro_f1"
    )
    assert lines[1] == "1,0.33,0.7,0.0001,,,"
    assert lines[2] == "2,0.67,0.6,9e-05,0.5,0.75,0.7"
    assert lines[3] == "3,1.0,0.4,0.0,,,"


def test_scopes_are_validated_and_keys_hashed():
    assert parse_scopes("infer, train,train") == ["infer", "train"]
    for bad in ("", "root", "train,deploy"):
        with pytest.raises(InputError):
            parse_scopes(bad)
    assert hash_key("tf-abc") != "tf-abc" and len(hash_key("tf-abc")) == 64


def test_jobs_left_validating_by_a_stopped_server_fail_at_start(tmp_path: Path):
    import time

    from sqlalchemy import select

    from tuneforge.jobs.tables import Job, JobEvent
    from tuneforge.server.app import build_state
    from tuneforge.server.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", workers=0)
    state = build_state(settings)
    with state.sessions.begin() as session:
        for job_id, status in (("ftjob-stuck", "validating_files"), ("ftjob-ok", "queued")):
            session.add(
                Job(
                    id=job_id,
                    project="p",
                    model="m",
                    training_file="file-x",
                    hyperparameters={},
                    method={},
                    seed=0,
                    run_config={},
                    status=status,
                    result_files=[],
                    created_at=int(time.time()),
                    queued_at=time.time(),
                )
            )
    state.engine.dispose()
    state = build_state(settings)  # a restart
    with state.sessions() as session:
        stuck, ok = session.get(Job, "ftjob-stuck"), session.get(Job, "ftjob-ok")
        assert stuck.status == "failed" and stuck.error["code"] == "validation_interrupted"
        assert ok.status == "queued"
        events = session.scalars(select(JobEvent.message).where(JobEvent.job_id == stuck.id))
        assert any("validating" in m for m in events)
    state.engine.dispose()

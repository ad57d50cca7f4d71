import math

from tuneforge.training.events import EventLog, read_events


def test_events_are_json_lines_with_listeners_and_truncate(tmp_path):
    seen = []
    log = EventLog(tmp_path / "e.jsonl", listeners=[seen.append])
    step = dict(lr=1e-3, epoch=0.5, grad_norm=None, examples_per_s=10.0, total_steps=4)
    log.emit("step", step=1, loss=0.5, **step)
    log.emit("step", step=2, loss=math.nan, **step)
    log.emit(
        "eval",
        split="validation",
        step=2,
        epoch=0.5,
        score=1.0,
        improved=True,
        metrics={"accuracy": 1.0},
    )
    assert log.count() == 3
    log.truncate(1)
    log.emit("resume", step=1, epoch=0, checkpoint="step-000001")
    log.close()
    events = read_events(tmp_path / "e.jsonl")
    assert [e["type"] for e in events] == ["step", "resume"]
    assert [e["type"] for e in seen] == ["step", "step", "eval", "resume"]
    assert seen[1]["loss"] is None  # NaN is never written as invalid JSON


def test_read_events_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"type": "step", "step": 1}\n{"type": "st')
    assert read_events(path) == [{"type": "step", "step": 1}]

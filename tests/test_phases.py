"""pipeline.core.phases: where a stage process's time goes, as the sweep and default-run benchmarks read it."""
import json
import time

import pytest

from pipeline.core import phases


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.setattr(phases, "_seconds", type(phases._seconds)(float))


def test_phases_add_up_and_nothing_is_written_without_the_variable(tmp_path, monkeypatch):
    with phases.timed("steps"):
        time.sleep(0.05)
        with phases.timed("Tracking"):  # nested: each phase counts its own block
            time.sleep(0.02)
    with phases.timed("steps"):
        time.sleep(0.03)
    monkeypatch.delenv(phases.ENV, raising=False)
    phases.write("train@x")
    target = tmp_path / "phases.jsonl"
    monkeypatch.setenv(phases.ENV, str(target))
    phases.write("train@x")
    phases.write("evaluate@x")
    first, second = [json.loads(line) for line in target.read_text().splitlines()]
    assert first["stage"] == "train@x" and second["stage"] == "evaluate@x"
    assert 0.095 <= first["steps"] < 0.5 and 0.02 <= first["Tracking"] < first["steps"]
    assert first["process"] > 0 and first["end"] <= time.time() + 0.001  # this process's age, from /proc; `end` rounded to ms


def test_a_line_splits_into_work_and_overhead_that_add_up_to_the_process():
    line = {"stage": "train@x", "pid": 1, "cwd": "/r", "end": 0.0, "process": 60.0, "startup": 4.0,
            "setup": 0.5, "steps": 40.0, "Monitoring": 5.0, "Tracking": 2.0, "Checkpointing": 1.0,
            "Progress": 0.25, "CoreShare": 0.25}
    work, overhead = phases.attribute(line)
    assert work == 45.0
    assert overhead["interpreter start-up and imports"] == 4.0
    assert overhead["MLflow (store, metrics, images, models)"] == 2.0
    assert overhead["other, in the stage process"] == pytest.approx(60.0 - 45.0 - 4.0 - 0.5 - 2.0 - 1.0)
    assert work + sum(overhead.values()) == pytest.approx(line["process"])

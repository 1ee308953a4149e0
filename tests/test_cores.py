"""Each stage takes its share of the cores it can actually have (pipeline.core.cores): its affinity
and cgroup quota, divided among the ganlab stages running and DVC's queue workers; an
OMP_NUM_THREADS the user set wins."""
import json
import os
import subprocess
import sys

import pytest
import torch

from pipeline.core import cores
from pipeline.core.env import QUEUE_WORKERS


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """8 cores, no quota, no user thread setting, a private record folder; torch's threads restored."""
    before = torch.get_num_threads()
    monkeypatch.setattr(cores, "COMPUTING", tmp_path / "computing")
    monkeypatch.setattr(cores, "_USER_THREADS", None)
    monkeypatch.setattr(cores, "cgroup_cpu_limit", lambda: None)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield tmp_path
    cores.unregister(tmp_path / "computing")
    torch.set_num_threads(before)


def another_stage(folder):
    """A live process recorded as a running stage (as its own share_cores would)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(100):  # its /proc entry is there at once; its start time is what the record holds
        started = cores._started(proc.pid)
        if started:
            break
    (folder / str(proc.pid)).write_text(json.dumps({"started": started, "argv": ["-m", "stages.train"]}))
    return proc


def test_cgroup_quota_in_cores_from_v2_or_v1(tmp_path):
    v2, v1 = tmp_path / "cpu.max", tmp_path / "v1"
    v2.write_text("150000 100000\n")
    assert cores.cgroup_cpu_limit(v2, v1) == 1.5  # docker run --cpus 1.5
    v2.write_text("max 100000\n")
    assert cores.cgroup_cpu_limit(v2, v1) is None
    v2.unlink()
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cores.cgroup_cpu_limit(v2, v1) == 2.0
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cores.cgroup_cpu_limit(v2, v1) is None


def test_a_quota_below_the_affinity_caps_the_cores(machine, monkeypatch):
    assert cores.usable_cores() == (8, "8 cores")
    monkeypatch.setattr(cores, "cgroup_cpu_limit", lambda: 2.5)
    assert cores.usable_cores() == (2, "a CPU quota of 2.5 cores")
    monkeypatch.setattr(cores, "cgroup_cpu_limit", lambda: None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert cores.usable_cores() == (3, "an affinity of 3 of 8 cores")


def test_stages_running_at_once_split_the_cores_and_rebalance_when_one_ends(machine):
    folder = machine / "computing"
    assert cores.share_cores() is None  # alone: every core, as torch would take them
    assert torch.get_num_threads() == 8 and cores.running_stages() == 1
    other = another_stage(folder)
    try:
        assert cores.rebalance() == "8 cores for 2 ganlab stages: now 4 torch thread(s) here"
        assert torch.get_num_threads() == 4 and os.environ["OMP_NUM_THREADS"] == "4"
        assert cores.rebalance() is None  # nothing changed since
    finally:
        other.kill()
        other.wait()
    assert cores.rebalance() == "8 cores for 1 ganlab stage: now 8 torch thread(s) here"
    assert not (folder / str(other.pid)).exists()  # the dead stage's record is cleaned up


def test_a_record_of_a_dead_or_reused_pid_does_not_count(machine):
    folder = machine / "computing"
    folder.mkdir()
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    (folder / str(finished.pid)).write_text(json.dumps({"started": "1", "argv": []}))
    (folder / str(os.getppid())).write_text(json.dumps({"started": "not its start time", "argv": []}))  # a reused pid
    assert cores.running_stages() == 0
    assert list(folder.iterdir()) == []


def test_the_users_omp_num_threads_wins_but_the_stage_still_counts(machine, monkeypatch):
    monkeypatch.setattr(cores, "_USER_THREADS", "3")
    torch.set_num_threads(3)
    assert cores.share_cores() is None and cores.rebalance() is None
    assert torch.get_num_threads() == 3
    assert cores.running_stages() == 1  # the others leave it its cores


def test_queued_experiments_each_take_their_share_of_the_cores(machine, monkeypatch):
    """`dvc queue start -j 2`: each worker's stages get cores // 2 torch threads. Workers are
    counted from DVC's own records: a worker whose process is gone, or that recorded its exit,
    does not count."""
    repo = machine / "repo"
    records, copy = repo / QUEUE_WORKERS, repo / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    records.mkdir(parents=True)
    copy.mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    for n, (pid, returncode) in enumerate([(os.getpid(), None), (sleeper.pid, None), (finished.pid, None),
                                           (sleeper.pid, 0)], start=1):
        (records / f"dvc-exp-worker-{n}.json").write_text(json.dumps(
            {"pid": pid, "stdin": None, "stdout": None, "stderr": None, "returncode": returncode}))
    try:
        monkeypatch.chdir(repo)
        assert cores.share_cores() is None  # the user's own `dvc repro`: every core
        monkeypatch.chdir(copy)
        assert cores.share_cores() == "8 cores for 2 dvc queue workers: 4 torch thread(s) here"
        assert torch.get_num_threads() == 4 and os.environ["OMP_NUM_THREADS"] == "4"
    finally:
        sleeper.kill()

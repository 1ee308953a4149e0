"""stages/_server.py: a `python -m stages.<kind>` command runs forked from a pre-imported
interpreter, and is otherwise the command it would have been (argv, directory, environment, streams,
exit status, signals, and the bytes a training writes)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from stages import _server
from tests.conftest import REPO_ROOT, stop_stage_servers
from tests.test_train import PARAMS, assert_same_weights, weights

PROBE = """\
import json, os, sys, time
preloaded = "torch" in sys.modules  # before this module imports anything heavy
if sys.argv[1] == "sleep":
    open("pid", "w").write(str(os.getpid()))
    time.sleep(60)
if sys.argv[1] == "raise":
    raise RuntimeError("probe failed")
import torch
print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "probe": os.environ.get("PROBE"), "stdin": sys.stdin.read(),
                  "preloaded": preloaded, "path0": sys.path[0], "threads": torch.get_num_threads()}))
print("to stderr", file=sys.stderr)
sys.exit(int(sys.argv[1]))
"""
FRESH = {_server.ENV: "off"}


@pytest.fixture(scope="module")
def server():
    assert _server.wait_for_server(), "the stage server did not start"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", _server.ENV)}
    return env


@pytest.fixture()
def probe_dir(tmp_path):
    """A directory with this repository's `stages` package (its hook) and a probe stage."""
    (tmp_path / "stages").mkdir()
    for name in ("__init__.py", "_server.py"):
        shutil.copy(REPO_ROOT / "stages" / name, tmp_path / "stages" / name)
    (tmp_path / "stages" / "probe.py").write_text(PROBE)
    return tmp_path


def run_probe(cwd, env, *args, **kwargs):
    return subprocess.run([sys.executable, "-m", "stages.probe", *args], cwd=cwd, env={**env, "PROBE": "p"},
                          capture_output=True, text=True, timeout=120, **kwargs)


def test_a_forked_stage_is_the_command_it_replaces(server, probe_dir):
    forked = run_probe(probe_dir, server, "3", "x", input="from stdin")
    assert forked.returncode == 3, forked.stderr
    seen = json.loads(forked.stdout)
    assert seen["preloaded"] is True  # it did come from the server
    assert seen["argv"] == [str(probe_dir / "stages" / "probe.py"), "3", "x"]
    assert seen["cwd"] == str(probe_dir) and seen["path0"] == str(probe_dir)
    assert seen["probe"] == "p" and seen["stdin"] == "from stdin"
    assert forked.stderr == "to stderr\n"

    fresh = run_probe(probe_dir, {**server, **FRESH}, "3", "x", input="from stdin")
    assert fresh.returncode == 3 and fresh.stderr == "to stderr\n"
    assert json.loads(fresh.stdout) == {**seen, "preloaded": False}  # server off: a fresh interpreter, same result

    # torch read the server's OMP_NUM_THREADS when the server imported it; the command's wins
    for how in ({}, FRESH):
        one = run_probe(probe_dir, {**server, **how, "OMP_NUM_THREADS": "1"}, "0")
        assert json.loads(one.stdout)["threads"] == 1, one.stderr

    failed = run_probe(probe_dir, server, "raise")
    assert failed.returncode == 1 and "RuntimeError: probe failed" in failed.stderr
    # interpreter options are the command's own: it runs as it is
    optioned = subprocess.run([sys.executable, "-X", "importtime", "-m", "stages.probe", "0"], cwd=probe_dir,
                              env=server, capture_output=True, text=True, timeout=120)
    assert json.loads(optioned.stdout)["preloaded"] is False and "import time:" in optioned.stderr


def test_a_signal_to_the_command_reaches_its_stage_and_a_killed_command_takes_its_stage(server, probe_dir):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        (probe_dir / "pid").unlink(missing_ok=True)
        client = subprocess.Popen([sys.executable, "-m", "stages.probe", "sleep"], cwd=probe_dir, env=server)
        deadline = time.monotonic() + 60
        while not (probe_dir / "pid").exists() or not (probe_dir / "pid").read_text():
            assert time.monotonic() < deadline and client.poll() is None
            time.sleep(0.05)
        stage = int((probe_dir / "pid").read_text())
        assert stage != client.pid  # the probe ran in the forked process, not in the command
        client.send_signal(sig)
        assert client.wait(timeout=30) == -sig
        deadline = time.monotonic() + 10
        while Path(f"/proc/{stage}").exists() and Path(f"/proc/{stage}/stat").read_text().split()[2] != "Z":
            assert time.monotonic() < deadline, f"stage {stage} outlived its command ({sig.name})"
            time.sleep(0.05)


def test_training_forked_from_the_server_writes_the_same_weights_as_a_fresh_interpreter(server, tmp_path):
    runs = {}
    for how in ("fresh", "forked"):
        root = tmp_path / how
        root.mkdir()
        (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
        env = {**server, "PYTHONPATH": str(REPO_ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
               "GANLAB_PHASES": str(root / "phases.jsonl"), **(FRESH if how == "fresh" else {})}
        for command in (["-m", "stages.prepare", "fmnist"], ["-m", "stages.train", "mlp"]):
            done = subprocess.run([sys.executable, *command], cwd=root, env=env, capture_output=True, text=True,
                                  timeout=600)
            assert done.returncode == 0, done.stderr[-3000:]
        runs[how] = root / "runs" / "mlp"
    assert_same_weights(weights(runs["fresh"] / "checkpoints" / "last.pt"),
                        weights(runs["forked"] / "checkpoints" / "last.pt"))
    steps = [(run / "steps.csv").read_text() for run in runs.values()]
    assert steps[0] == steps[1] and len(steps[0].splitlines()) > 3
    # the second did fork: it began its own code without importing torch first
    trained = {how: json.loads((tmp_path / how / "phases.jsonl").read_text().splitlines()[-1]) for how in runs}
    assert trained["forked"]["forked"] and not trained["fresh"]["forked"]
    assert trained["forked"]["startup"] < trained["fresh"]["startup"] / 2, trained


def test_a_stage_outliving_an_idle_server_does_not_keep_a_new_one_from_starting(probe_dir):
    """The server leaves when idle even while a stage it forked runs on; the next command starts
    another server at once (the old one's lock went with it, not with the stage)."""
    short = Path(tempfile.mkdtemp(prefix="gl", dir="/tmp"))  # a socket path must stay under ~100 characters
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", _server.ENV)} | {"TMPDIR": str(short)}
    serve = "import stages._server as s; s.IDLE_S = 2; s.serve()"
    first = subprocess.Popen([sys.executable, "-c", serve], cwd=probe_dir, env=env, start_new_session=True)
    long_stage = None
    try:
        probe = [sys.executable, "-c", "import sys; sys.path.insert(0, '.'); from stages import _server; "
                 "sys.exit(0 if _server.wait_for_server(60) else 1)"]
        assert subprocess.run(probe, cwd=probe_dir, env=env, timeout=120).returncode == 0
        long_stage = subprocess.Popen([sys.executable, "-m", "stages.probe", "sleep"], cwd=probe_dir, env=env)
        deadline = time.monotonic() + 60
        while not (probe_dir / "pid").exists() or not (probe_dir / "pid").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert first.wait(timeout=30) == 0  # idle: it left, its stage still running
        assert long_stage.poll() is None
        started = time.monotonic()
        assert subprocess.run(probe, cwd=probe_dir, env=env, timeout=120).returncode == 0
        assert time.monotonic() - started < 60
        forked = run_probe(probe_dir, env, "0")
        assert json.loads(forked.stdout)["preloaded"] is True
    finally:
        first.kill()
        if long_stage is not None:
            long_stage.kill()
        stop_stage_servers([short])  # the second one
        shutil.rmtree(short, ignore_errors=True)

"""tools/stage_server.py: a lane's `python -m stages.<kind>` runs forked from a pre-imported
interpreter, and is otherwise the command it would have been (argv, directory, environment, streams,
exit status, signals, and the bytes a training writes)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.test_train import PARAMS, assert_same_weights, weights

sys.path.insert(0, str(REPO_ROOT / "tools"))
import stage_server  # noqa: E402

PROBE = """\
import json, os, sys, time
preloaded = "torch" in sys.modules  # before this module imports anything heavy
if sys.argv[1] == "sleep":
    open("pid", "w").write(str(os.getpid()))
    time.sleep(60)
if sys.argv[1] == "raise":
    raise RuntimeError("probe failed")
print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "probe": os.environ.get("PROBE"), "stdin": sys.stdin.read(),
                  "preloaded": preloaded, "path0": sys.path[0]}))
print("to stderr", file=sys.stderr)
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A stage server, and the environment whose `python` sends `-m stages.*` to it."""
    root = tmp_path_factory.mktemp("server")
    sock = root / "stages.sock"
    proc = subprocess.Popen([sys.executable, stage_server.__file__, str(sock)], stderr=subprocess.PIPE, text=True)
    assert "ready" in proc.stderr.readline()
    shim = stage_server.write_shim(str(root / "bin"))
    env = {**os.environ, stage_server.SOCKET_ENV: str(sock), "PATH": f"{Path(shim).parent}:{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    yield env
    proc.kill()
    proc.wait()


@pytest.fixture()
def probe_dir(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "__init__.py").write_text("")
    (tmp_path / "stages" / "probe.py").write_text(PROBE)
    return tmp_path


def run_probe(cwd, env, *args, **kwargs):
    return subprocess.run(["python", "-m", "stages.probe", *args], cwd=cwd, env={**env, "PROBE": "p"},
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

    fresh = run_probe(probe_dir, {**server, stage_server.SOCKET_ENV: str(probe_dir / "no-server")}, "3", "x",
                      input="from stdin")
    assert fresh.returncode == 3 and fresh.stderr == "to stderr\n"
    assert json.loads(fresh.stdout) == {**seen, "preloaded": False}  # no server: the real interpreter, same result

    failed = run_probe(probe_dir, server, "raise")
    assert failed.returncode == 1 and "RuntimeError: probe failed" in failed.stderr


def test_a_signal_to_the_command_reaches_its_stage_and_a_killed_command_takes_its_stage(server, probe_dir):
    for sig, client_code in ((signal.SIGTERM, -signal.SIGTERM), (signal.SIGKILL, -signal.SIGKILL)):
        (probe_dir / "pid").unlink(missing_ok=True)
        client = subprocess.Popen(["python", "-m", "stages.probe", "sleep"], cwd=probe_dir, env=server)
        deadline = time.monotonic() + 60
        while not (probe_dir / "pid").exists() or not (probe_dir / "pid").read_text():
            assert time.monotonic() < deadline and client.poll() is None
            time.sleep(0.05)
        stage = int((probe_dir / "pid").read_text())
        client.send_signal(sig)
        assert client.wait(timeout=30) == client_code
        deadline = time.monotonic() + 10
        while Path(f"/proc/{stage}").exists() and "Z" not in Path(f"/proc/{stage}/stat").read_text().split()[2]:
            assert time.monotonic() < deadline, f"stage {stage} outlived its command ({sig.name})"
            time.sleep(0.05)


def test_training_forked_from_the_server_writes_the_same_weights_as_a_fresh_interpreter(server, tmp_path):
    runs = {}
    for how in ("fresh", "forked"):
        root = tmp_path / how
        root.mkdir()
        (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
        env = {**server, "PYTHONPATH": str(REPO_ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
               "GANLAB_PHASES": str(root / "phases.jsonl")}
        if how == "fresh":
            env.pop(stage_server.SOCKET_ENV)
        for command in (["-m", "stages.prepare", "fmnist"], ["-m", "stages.train", "mlp"]):
            done = subprocess.run(["python", *command], cwd=root, env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stderr[-3000:]
        runs[how] = root / "runs" / "mlp"
    assert_same_weights(weights(runs["fresh"] / "checkpoints" / "last.pt"),
                        weights(runs["forked"] / "checkpoints" / "last.pt"))
    assert (runs["fresh"] / "history.csv").read_text() != ""
    steps = [(root / "steps.csv").read_text() for root in runs.values()]
    assert steps[0] == steps[1]
    # and the second did fork: it began its own code without importing torch first
    startup = {how: json.loads((tmp_path / how / "phases.jsonl").read_text().splitlines()[-1])["startup"]
               for how in runs}
    assert startup["forked"] < startup["fresh"] / 2, startup

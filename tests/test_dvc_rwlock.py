"""DVC's rwlock file survives a `dvc` killed while rewriting it (patches/dvc_atomic_rwlock)."""
import json
import os
import signal
import subprocess
import sys

import pytest

# A dvc process that locks an output (a complete rwlock write), then starts a second write and
# stalls in it: the kill lands where a real one could, after the file was opened for writing and
# before the write ended. argv: the lock folder, "patched" or "dvc" (DVC's own write).
KILLED_MID_WRITE = """
import json, sys, time
import dvc.rwlock as rwlock
from dvc.fs import localfs

lock_dir, which = sys.argv[1], sys.argv[2]
edit = rwlock._edit_rwlock if which == "patched" else rwlock._edit_rwlock.dvc_original
with edit(lock_dir, localfs, False) as lock:
    lock["write"]["data/out"] = {"pid": 1, "cmd": "first"}

class Stalling:
    load = staticmethod(json.load)
    def dump(obj, fobj):
        fobj.write(json.dumps(obj)[:9])
        fobj.flush()
        print("writing", flush=True)
        time.sleep(60)

rwlock.json = Stalling
with edit(lock_dir, localfs, False) as lock:
    lock["write"]["data/out"]["cmd"] = "second"
"""


def kill_mid_write(lock_dir, which: str) -> str:
    """The rwlock file's text after a dvc process was SIGKILLed inside its second write."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED_MID_WRITE, str(lock_dir), which],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line == "writing\n", f"the child never reached its second write:\n{proc.stderr.read()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return (lock_dir / "rwlock").read_text()


def test_the_patch_is_active_in_every_interpreter_of_the_environment():
    """requirements.txt installs it: a fresh interpreter that imports DVC's rwlock gets it patched."""
    out = subprocess.run([sys.executable, "-c", "import dvc.rwlock as r; print(hasattr(r._edit_rwlock, 'dvc_original'))"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True", "patches/dvc_atomic_rwlock is not installed: pip install -r requirements.txt"


def test_a_dvc_killed_while_rewriting_the_rwlock_leaves_the_previous_lock(tmp_path):
    text = kill_mid_write(tmp_path, "patched")
    assert json.loads(text)["write"]["data/out"]["cmd"] == "first"
    # and DVC, reading it again, takes it as it took the complete write
    from dvc.fs import localfs
    from dvc.rwlock import _edit_rwlock

    with _edit_rwlock(str(tmp_path), localfs, False) as lock:
        assert lock["write"]["data/out"]["cmd"] == "first"


def test_dvcs_unpatched_write_killed_midway_leaves_a_cut_file_so_the_patch_is_still_needed(tmp_path):
    """When this fails, DVC writes the file safely itself: remove patches/dvc_atomic_rwlock."""
    text = kill_mid_write(tmp_path, "dvc")
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)

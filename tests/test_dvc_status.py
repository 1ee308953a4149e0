"""What a code edit re-runs, asked of DVC itself: a small repository whose every stage is recorded
as done (placeholder outputs committed with `dvc commit`, no training), one file edited, then
`dvc status` lists the stages whose dependencies changed."""
import json
from pathlib import Path

import pytest
import yaml

from tests.dvc_repo import DVC, down_scaled_default, git_env, sh, study_repo

ALWAYS_RUNS = {"sources"}  # fingerprints the image folders on every run (dvc.yaml says why)


def recorded_repo(root: Path) -> tuple[Path, dict]:
    """A study repository whose stages DVC holds as up to date, with made-up outputs."""
    params = down_scaled_default()
    repo = study_repo(root, params)
    sh([*DVC, "repro", "--quiet", "sources"], repo, git_env())  # real manifests (prepare@ depends on them)
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        outs = [Path(out.fs_path) for stage in dvc.index.stages for out in stage.outs]
    for out in outs:
        if out.exists():
            continue
        if out.suffix:  # a file output
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(f"placeholder {out.name}\n")
        else:
            out.mkdir(parents=True, exist_ok=True)
            (out / "placeholder").write_text("placeholder\n")
    sh([*DVC, "commit", "--force", "--quiet"], repo, git_env())
    return repo, params


def changed_stages(repo: Path) -> set[str]:
    status = json.loads(sh([*DVC, "status", "--json"], repo, git_env()).strip().splitlines()[-1])
    return set(status) - ALWAYS_RUNS


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return recorded_repo(tmp_path_factory.mktemp("status"))


def edited(repo: Path, path: str) -> set[str]:
    """The stages `dvc status` reports after appending a comment to `path` (then restored)."""
    file = repo / path
    before = file.read_text()
    file.write_text(before + "# an edit\n")
    try:
        return changed_stages(repo)
    finally:
        file.write_text(before)


def stages_of(params: dict, kinds: tuple[str, ...], model: str | None = None) -> set[str]:
    return {f"{kind}@{name}" for name, entry in params["experiments"].items() for kind in kinds
            if model is None or entry["model"] == model}


def test_a_recorded_run_is_up_to_date(repo):
    repo, _ = repo
    assert changed_stages(repo) == set()
    # and a no-op repro runs no stage after the image-folder fingerprint
    out = sh([*DVC, "repro", "--dry"], repo, git_env())
    ran = [line for line in out.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'sources':"], out


def test_editing_a_loss_reruns_only_the_trainings(repo):
    repo, params = repo
    assert edited(repo, "pipeline/train/losses.py") == stages_of(params, ("train",))


def test_editing_a_family_net_reruns_only_that_familys_experiments(repo):
    repo, params = repo
    dcgan = stages_of(params, ("train", "evaluate"), model="dcgan")
    assert dcgan and dcgan != stages_of(params, ("train", "evaluate"))
    assert edited(repo, "pipeline/nets/dcgan.py") == dcgan
    assert edited(repo, "pipeline/nets/acgan.py") == stages_of(params, ("train", "evaluate"), model="acgan")


def test_editing_the_report_reruns_only_aggregate(repo):
    repo, _ = repo
    assert edited(repo, "pipeline/report/pages.py") == {"aggregate"}
    assert edited(repo, "pipeline/report/studies/acgan_classes.py") == {"aggregate"}


def test_editing_an_experiment_reruns_only_its_stages_and_the_report(repo):
    repo, params = repo
    name = next(iter(params["experiments"]))
    text = (repo / "params.yaml").read_text()
    changed = yaml.safe_load(text)
    changed["experiments"][name]["seed"] = 99
    (repo / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False, allow_unicode=True))
    try:
        # and aggregate, whose settings tables show every experiment's resolved settings
        assert changed_stages(repo) == {f"train@{name}", f"evaluate@{name}", "aggregate"}
    finally:
        (repo / "params.yaml").write_text(text)

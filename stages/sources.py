"""DVC stage sources: a manifest per dataset of the files DVC cannot track (image folders).

An image folder lives outside the pipeline's outputs, so DVC cannot see an image added, removed,
replaced or edited there. This stage runs on every `dvc repro` (`always_changed`, about a second)
and writes data/sources/<dataset>.json; `prepare@<dataset>` depends on that file, so exactly the
datasets whose files changed are prepared again. The fingerprint is the folder's file names and
contents (not modification times, so clones on other machines agree and reuse each other's DVC
run cache). The array sources (MNIST, CIFAR-10, ...) need no manifest: their files are verified
against fixed md5s wherever they are found.
"""
import hashlib
from pathlib import Path

from pipeline.core import layout
from pipeline.data import folders
from pipeline.data.files import md5
from pipeline.core.config import DatasetConfig, Params, load_params, resolve_experiment
from pipeline.core.errors import DataError
from pipeline.tracking.access import check_write_access

SOURCES = Path("data/sources")  # dvc.yaml names data/sources/<dataset>.json as prepare@<dataset>'s dependency


def source_manifest(cfg: DatasetConfig) -> dict:
    if cfg.source != "imagefolder":
        return {"source": cfg.source, "files": "verified against fixed md5s when prepared"}
    root = Path(cfg.path).expanduser()
    try:
        files, _, classes = folders.image_files(root)
    except DataError as exc:  # prepare@<dataset> reports it when it runs; the other datasets go on
        return {"source": cfg.source, "path": cfg.path, "error": str(exc)}
    checksums = root / folders.CHECKSUMS_FILE
    digest = hashlib.sha256()
    if checksums.is_file():  # image_files checked every image against it: its names + MD5SUMS say it all
        digest.update("\n".join(path.relative_to(root).as_posix() for path in files).encode())
        digest.update(checksums.read_bytes())
    else:
        for path in files:
            digest.update(f"{path.relative_to(root).as_posix()}\0{md5(path.read_bytes())}\n".encode())
    return {"source": cfg.source, "path": cfg.path, "images": len(files), "classes": classes,
            "fingerprint": digest.hexdigest()}


def sources(params: Params | None = None) -> dict:
    params = params or load_params()
    # the first stage of every `dvc repro`: a tracking server that will refuse the runs says so now
    # (a generator: the experiments are resolved only when there is a server to ask)
    check_write_access(resolve_experiment(params, name).study for name in params.experiments)
    manifests = {name: source_manifest(cfg) for name, cfg in params.datasets.items()}
    SOURCES.mkdir(parents=True, exist_ok=True)
    for name, manifest in manifests.items():
        layout.write_json_atomic(SOURCES / f"{name}.json", manifest)
    for stale in SOURCES.glob("*.json"):  # datasets since removed from params.yaml
        if stale.stem not in manifests:
            stale.unlink()
    return manifests


if __name__ == "__main__":
    from stages._cli import run

    run(sources, "python -m stages.sources")

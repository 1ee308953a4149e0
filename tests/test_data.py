"""Dataset registry on the real files: lookup, checksum of decoded content, offline errors,
corrupt files, subsets / holdout / conversion, image folders."""
import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import data
from pipeline.config import DatasetConfig
from pipeline.errors import DataError
from tests.conftest import REPO_ROOT

ICONS = Path("/usr/share/icons/oxygen/base/64x64")


@pytest.fixture()
def data_dirs(monkeypatch, tmp_path):
    """Point the search path at the given folders only (and a private data/raw)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "data_dirs", lambda: list(dirs))
    dirs: list[Path] = []
    return dirs


def test_mnist_test_split_decodes_and_verifies(data_dirs, shared_datasets, tmp_path):
    data_dirs.append(shared_datasets)  # files sit in the per-source sub-folder mnist/
    meta = data.prepare_dataset(DatasetConfig(source="mnist", split="test"), tmp_path / "out")
    prepared = data.load_prepared(tmp_path / "out")
    assert prepared.images.shape == (10000, 1, 28, 28) and prepared.images.dtype.is_floating_point is False
    assert prepared.labels.tolist()[:10] == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the well-known first MNIST test labels
    assert meta["class_counts"] == np.bincount(prepared.labels.numpy()).tolist() and sum(meta["class_counts"]) == 10000
    assert prepared.test_images is None  # split: test has no further held-out part
    again = data.prepare_dataset(DatasetConfig(source="mnist", split="test"), tmp_path / "again")
    assert again["content_hash"] == meta["content_hash"]


def test_debian_fashion_mnist_passes_by_decompressed_content(data_dirs, fashion_mnist_dir, tmp_path):
    data_dirs.append(fashion_mnist_dir.parent)  # /usr/share/datasets, sub-folder fashion-mnist/
    raw = (fashion_mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    spec = data.ARRAY_SOURCES["fashion_mnist"].splits["test"].labels
    assert data.md5(raw) != spec.md5, "Debian re-compressed the file: only the decoded content can match"
    cfg = DatasetConfig(source="fashion_mnist", split="train", max_images=300, resolution=32, channels=3)
    meta = data.prepare_dataset(cfg, tmp_path / "fm")
    prepared = data.load_prepared(tmp_path / "fm")
    assert prepared.images.shape == (300, 3, 32, 32)
    assert prepared.test_images.shape == (10000, 3, 32, 32)  # split: train keeps the official test split aside
    assert meta["classes"][9] == "Ankle boot" and meta["resolution"] == 32
    assert (prepared.images[:, 0] == prepared.images[:, 2]).all()  # grey repeated to RGB


def test_same_file_name_of_another_dataset_is_skipped(data_dirs, fashion_mnist_dir, shared_datasets, tmp_path):
    # Fashion-MNIST and MNIST share file names: a flat folder of one must not pass as the other.
    data_dirs += [fashion_mnist_dir, shared_datasets / "mnist"]
    images, labels = data.ARRAY_SOURCES["mnist"].load("test")
    assert labels[:3].tolist() == [7, 2, 1]


def corrupt_copy(src: Path, dst_dir: Path) -> Path:
    dst_dir.mkdir(parents=True, exist_ok=True)
    content = bytearray(gzip.decompress(src.read_bytes()))
    content[5000] ^= 0xFF  # one pixel changed: header intact, content hash not
    dst = dst_dir / src.name
    dst.write_bytes(gzip.compress(bytes(content)))
    return dst


def test_corrupt_file_is_named_with_both_hashes(data_dirs, shared_datasets, tmp_path):
    bad = corrupt_copy(shared_datasets / "mnist" / "t10k-images-idx3-ubyte.gz", tmp_path / "bad")
    shutil.copy(shared_datasets / "mnist" / "t10k-labels-idx1-ubyte.gz", tmp_path / "bad")
    data_dirs.append(tmp_path / "bad")
    with pytest.raises(DataError) as info:
        data.prepare_dataset(DatasetConfig(source="mnist", split="test"), tmp_path / "out")
    message = str(info.value)
    assert str(bad) in message and "2646ac647ad5339dbf082846283269ea" in message  # expected
    assert data.md5(gzip.decompress(bad.read_bytes())) in message  # actual
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()


def test_truncated_archive_is_an_error(data_dirs, shared_datasets, tmp_path):
    folder = tmp_path / "trunc"
    folder.mkdir()
    src = shared_datasets / "mnist" / "t10k-images-idx3-ubyte.gz"
    (folder / src.name).write_bytes(src.read_bytes()[:1000])
    data_dirs.append(folder)
    with pytest.raises(DataError, match="cannot be decompressed"):
        data.ARRAY_SOURCES["mnist"].load("test")


def test_missing_file_offline_says_where_and_url(data_dirs, tmp_path):
    data_dirs.append(tmp_path / "empty")
    with pytest.raises(DataError) as info:
        data.prepare_dataset(DatasetConfig(source="mnist", split="train"), tmp_path / "out")
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "GANLAB_OFFLINE" in message
    assert str(tmp_path / "empty") in message and "https://" in message and "mnist/" in message
    with pytest.raises(DataError, match="cifar-10-python.tar.gz.*https://www.cs.toronto.edu"):
        data.SOURCES["cifar10"].load("train")


def test_cifar_archive_members_are_checked(data_dirs, tmp_path):
    """A re-packed archive whose batch differs from the official one is refused, naming the member."""
    folder = tmp_path / "cifar10"
    folder.mkdir()
    payload = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    import pickle

    blob = pickle.dumps(payload)
    with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    data_dirs.append(tmp_path)
    with pytest.raises(DataError, match=r"member test_batch has md5 \w+, expected 40351d587109b95175f43aff81a1287e"):
        data.SOURCES["cifar10"].load("test")


def test_kmnist_holdout_is_disjoint_and_fixed(data_dirs, shared_datasets, tmp_path):
    data_dirs.append(shared_datasets)
    cfg = DatasetConfig(source="kmnist", split="test", holdout=0.2)
    meta = data.prepare_dataset(cfg, tmp_path / "k")
    k = data.load_prepared(tmp_path / "k")
    assert (len(k.images), len(k.test_images)) == (8000, 2000)
    assert meta["classes"][0] == "お" and len(meta["classes"]) == 10
    # disjoint: no image of the held-out part is (byte-identical to) a training image
    train_rows = {bytes(x) for x in k.images.flatten(1).numpy()}
    assert sum(bytes(x) in train_rows for x in k.test_images.flatten(1).numpy()) < 5  # a few true duplicates exist
    assert data.prepare_dataset(cfg, tmp_path / "k2")["content_hash"] == meta["content_hash"]


def test_k49_class_names_from_verified_classmap(data_dirs, shared_datasets):
    data_dirs.append(shared_datasets)
    names = data.ARRAY_SOURCES["k49"].class_names()
    assert len(names) == 49 and names[:5] == ["あ", "い", "う", "え", "お"]


def test_convert_channels_and_resolution():
    rgb = np.zeros((1, 3, 4, 4), np.uint8)
    rgb[0, 0] = 255  # pure red
    grey = data.convert(rgb, 1, 4)
    assert grey.shape == (1, 1, 4, 4) and int(grey[0, 0, 0, 0]) == round(0.299 * 255)
    up = data.convert(np.full((2, 1, 28, 28), 200, np.uint8), 3, 32)
    assert up.shape == (2, 3, 32, 32) and (up == 200).all()  # a flat image stays flat when resized


@pytest.mark.skipif(not ICONS.is_dir(), reason="oxygen-icon-theme not installed (apt-get install oxygen-icon-theme)")
def test_image_folder_labels_from_subfolders_rgba_on_white(tmp_path):
    files, labels, classes = data.image_files(ICONS)
    assert "apps" in classes and "devices" in classes
    assert len({f.resolve() for f in files}) == len(files)  # symlinked aliases counted once
    cfg = DatasetConfig(source="imagefolder", path=str(ICONS), resolution=32, split="all", holdout=0.1)
    meta = data.prepare_dataset(cfg, tmp_path / "icons")
    icons = data.load_prepared(tmp_path / "icons")
    assert icons.images.shape[1:] == (3, 32, 32)
    assert len(icons.images) + len(icons.test_images) == len(files) == meta["num_images"] + meta["num_test_images"]
    # icons are drawn on transparent backgrounds: corners come out white after compositing
    corners = icons.images[:, :, 0, 0].float().mean()
    assert corners > 240, corners


def test_unreadable_image_is_named(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png: not a readable image"):
        data.load_image_folder(DatasetConfig(source="imagefolder", path=str(tmp_path), resolution=16, split="all"))


def test_prepare_stage_reports_corrupt_file_and_writes_nothing(tmp_path, shared_datasets):
    bad_dir = tmp_path / "bad"
    corrupt_copy(shared_datasets / "mnist" / "t10k-images-idx3-ubyte.gz", bad_dir)
    shutil.copy(shared_datasets / "mnist" / "t10k-labels-idx1-ubyte.gz", bad_dir)
    params = {"profile": "p", "profiles": {"p": {}}, "datasets": {"m": {"source": "mnist", "split": "test"}},
              "defaults": {}, "experiments": {}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "GANLAB_DATA_DIRS": str(bad_dir), "GANLAB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "stages.prepare", "m"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "t10k-images-idx3-ubyte.gz" in result.stderr and "expected 2646ac647ad5339dbf082846283269ea" in result.stderr
    assert not (tmp_path / "data" / "prepared").exists() or not any((tmp_path / "data" / "prepared").iterdir())


def test_stl10_images_are_stored_column_major():
    stored = np.arange(2 * 3 * 96 * 96, dtype=np.int64).astype(np.uint8).reshape(2, 3, 96, 96)  # [n, c, w, h]
    images = data.parse_stl_images(stored.tobytes())
    assert images.shape == (2, 3, 96, 96)
    assert images[1, 2, 5, 7] == stored[1, 2, 7, 5]  # row 5, column 7 is stored at w=7, h=5
    with pytest.raises(DataError, match="not a whole number"):
        data.parse_stl_images(b"\0" * 1000)


def test_stl10_archive_missing_or_wrong(data_dirs, tmp_path):
    data_dirs.append(tmp_path / "stl")
    with pytest.raises(DataError, match=r"stl10_binary.tar.gz not found.*http://ai.stanford.edu/~acoates/stl10/"):
        data.SOURCES["stl10"].load("train+unlabeled")
    (tmp_path / "stl").mkdir()
    fake = tmp_path / "stl" / "stl10_binary.tar.gz"
    fake.write_bytes(b"not the archive")
    with pytest.raises(DataError) as info:
        data.SOURCES["stl10"].load("train")
    assert str(fake) in str(info.value) and "91f7769df0f17e558f3565bffb0c7dfb" in str(info.value)
    assert data.md5(b"not the archive") in str(info.value)


@pytest.mark.parametrize("options,fragment", [
    ({"source": "mnist", "split": "unlabeled"}, "split 'unlabeled' does not exist for mnist"),
    ({"source": "stl10", "split": "all"}, "split 'all' does not exist for stl10"),
    ({"source": "stl10", "split": "train+unlabeled", "classes": 5}, "unlabeled"),
])
def test_split_options_are_checked(options, fragment):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=fragment.replace("+", r"\+")):
        DatasetConfig(**options)
    assert data.dataset_shape(DatasetConfig(source="stl10", split="train+unlabeled")) == (3, 48)

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

from pipeline.data import prepare as data
from pipeline.data import files
from pipeline.data import folders
from pipeline.data import official
from pipeline.core.config import DatasetConfig
from pipeline.core.errors import DataError
from tests.conftest import ICONS64, ICONS_APPS128, REPO_ROOT



@pytest.fixture()
def data_dirs(monkeypatch, tmp_path):
    """Point the search path at the given folders only (and a private data/raw)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(files, "data_dirs", lambda: list(dirs))
    dirs: list[Path] = []
    return dirs


def test_mnist_test_split_decodes_and_verifies(data_dirs, embedded, tmp_path):
    data_dirs.append(embedded)  # files sit in the per-source sub-folder mnist/
    meta = data.prepare_dataset(DatasetConfig(source="mnist", split="test"), tmp_path / "out")
    prepared = data.load_prepared(tmp_path / "out")
    assert prepared.images.shape == (10000, 1, 28, 28) and prepared.images.dtype.is_floating_point is False
    assert prepared.labels.tolist()[:10] == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the well-known first MNIST test labels
    assert meta["class_counts"] == np.bincount(prepared.labels.numpy()).tolist() and sum(meta["class_counts"]) == 10000
    assert prepared.test_images is None  # split: test has no further held-out part
    again = data.prepare_dataset(DatasetConfig(source="mnist", split="test"), tmp_path / "again")
    assert again["content_hash"] == meta["content_hash"]


def test_recompressed_fashion_mnist_passes_by_decompressed_content(data_dirs, embedded, tmp_path):
    data_dirs.append(embedded)  # sub-folder fashion-mnist/: Debian's re-compressed copies of the official files
    raw = (embedded / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    spec = official.ARRAY_SOURCES["fashion_mnist"].splits["test"].labels
    assert files.md5(raw) != spec.md5, "Debian re-compressed the file: only the decoded content can match"
    cfg = DatasetConfig(source="fashion_mnist", split="test", max_images=300, resolution=32, channels=3, holdout=0.2)
    meta = data.prepare_dataset(cfg, tmp_path / "fm")
    prepared = data.load_prepared(tmp_path / "fm")
    assert prepared.images.shape == (240, 3, 32, 32) and prepared.test_images.shape == (60, 3, 32, 32)
    assert meta["classes"][9] == "Ankle boot" and meta["resolution"] == 32
    assert (prepared.images[:, 0] == prepared.images[:, 2]).all()  # grey repeated to RGB
    assert meta["description"] == "Fashion-MNIST test split: 240 training images / 60 held out, 32 px, RGB"


def test_missing_training_file_is_named_beside_the_test_files(data_dirs, embedded, tmp_path):
    """Only the test files are embedded: the training split is a clear error naming its file."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for kind in ("images-idx3", "labels-idx1"):
        shutil.copy(embedded / "mnist" / f"t10k-{kind}-ubyte.gz", folder / f"t10k-{kind}-ubyte.gz")
    data_dirs.append(folder)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz not found"):
        data.prepare_dataset(DatasetConfig(source="mnist", split="train"), tmp_path / "out")


def test_same_file_name_of_another_dataset_is_skipped(data_dirs, embedded, tmp_path):
    # Fashion-MNIST and MNIST share file names: a flat folder of one must not pass as the other.
    data_dirs += [embedded / "fashion-mnist", embedded / "mnist"]
    images, labels = official.ARRAY_SOURCES["mnist"].load("test")
    assert labels[:3].tolist() == [7, 2, 1]


def corrupt_copy(src: Path, dst_dir: Path) -> Path:
    dst_dir.mkdir(parents=True, exist_ok=True)
    content = bytearray(gzip.decompress(src.read_bytes()))
    content[5000] ^= 0xFF  # one pixel changed: header intact, content hash not
    dst = dst_dir / src.name
    dst.write_bytes(gzip.compress(bytes(content)))
    return dst


def test_corrupt_file_is_named_with_both_hashes(data_dirs, embedded, tmp_path):
    bad = corrupt_copy(embedded / "mnist" / "t10k-images-idx3-ubyte.gz", tmp_path / "bad")
    shutil.copy(embedded / "mnist" / "t10k-labels-idx1-ubyte.gz", tmp_path / "bad")
    data_dirs.append(tmp_path / "bad")
    with pytest.raises(DataError) as info:
        data.prepare_dataset(DatasetConfig(source="mnist", split="test"), tmp_path / "out")
    message = str(info.value)
    assert str(bad) in message and "2646ac647ad5339dbf082846283269ea" in message  # expected
    assert files.md5(gzip.decompress(bad.read_bytes())) in message  # actual
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()


def test_truncated_archive_is_an_error(data_dirs, embedded, tmp_path):
    folder = tmp_path / "trunc"
    folder.mkdir()
    src = embedded / "mnist" / "t10k-images-idx3-ubyte.gz"
    (folder / src.name).write_bytes(src.read_bytes()[:1000])
    data_dirs.append(folder)
    with pytest.raises(DataError, match="cannot be decompressed"):
        official.ARRAY_SOURCES["mnist"].load("test")


def test_missing_file_offline_says_where_and_url(data_dirs, tmp_path):
    data_dirs.append(tmp_path / "empty")
    with pytest.raises(DataError) as info:
        data.prepare_dataset(DatasetConfig(source="mnist", split="train"), tmp_path / "out")
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "GANLAB_OFFLINE" in message
    assert str(tmp_path / "empty") in message and "https://" in message and "mnist/" in message


def test_missing_dataset_offline_names_the_dataset_every_path_tried_and_the_url(data_dirs, tmp_path):
    data_dirs += [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(DataError) as info:
        data.prepare_dataset(DatasetConfig(source="cifar10"), tmp_path / "out", name="my_cifar")
    message = str(info.value)
    assert message.startswith("dataset 'my_cifar' (CIFAR-10) cannot be prepared: cifar-10-python.tar.gz not found")
    for folder in (tmp_path / "a", tmp_path / "b"):
        for sub in ("cifar10", "cifar-10", ""):
            assert f"    {folder / sub / 'cifar-10-python.tar.gz'}\n" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert "cifar-10-batches-py" in message and "GANLAB_OFFLINE=1" in message and "data/raw/cifar10" in message
    assert not (tmp_path / "out").exists()


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
        official.SOURCES["cifar10"].load("test")


def test_kmnist_holdout_is_disjoint_and_fixed(data_dirs, embedded, tmp_path):
    data_dirs.append(embedded)
    cfg = DatasetConfig(source="kmnist", split="test", holdout=0.2)
    meta = data.prepare_dataset(cfg, tmp_path / "k")
    k = data.load_prepared(tmp_path / "k")
    assert (len(k.images), len(k.test_images)) == (8000, 2000)
    assert meta["classes"][0] == "お" and len(meta["classes"]) == 10
    # disjoint: no image of the held-out part is (byte-identical to) a training image
    train_rows = {bytes(x) for x in k.images.flatten(1).numpy()}
    assert sum(bytes(x) in train_rows for x in k.test_images.flatten(1).numpy()) < 5  # a few true duplicates exist
    assert data.prepare_dataset(cfg, tmp_path / "k2")["content_hash"] == meta["content_hash"]


def test_k49_class_names_from_verified_classmap(data_dirs, embedded):
    data_dirs.append(embedded)
    names = official.ARRAY_SOURCES["k49"].class_names()
    assert len(names) == 49 and names[:5] == ["あ", "い", "う", "え", "お"]


def test_convert_channels_and_resolution():
    rgb = np.zeros((1, 3, 4, 4), np.uint8)
    rgb[0, 0] = 255  # pure red
    grey = data.convert(rgb, 1, 4)
    assert grey.shape == (1, 1, 4, 4) and int(grey[0, 0, 0, 0]) == round(0.299 * 255)
    up = data.convert(np.full((2, 1, 28, 28), 200, np.uint8), 3, 32)
    assert up.shape == (2, 3, 32, 32) and (up == 200).all()  # a flat image stays flat when resized


def test_image_folder_labels_from_subfolders_rgba_on_white(tmp_path):
    files, labels, classes = folders.image_files(ICONS64)
    assert "apps" in classes and "devices" in classes
    assert len({f.resolve() for f in files}) == len(files)  # symlinked aliases counted once
    cfg = DatasetConfig(source="imagefolder", path=str(ICONS64), resolution=32, split="all", holdout=0.1)
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
        folders.load_image_folder(DatasetConfig(source="imagefolder", path=str(tmp_path), resolution=16, split="all"))


def test_prepare_stage_reports_corrupt_file_and_writes_nothing(tmp_path, embedded):
    """A wrong file under the name of MNIST's training images (no good copy exists anywhere)."""
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    shutil.copy(embedded / "mnist" / "t10k-images-idx3-ubyte.gz", bad_dir / "train-images-idx3-ubyte.gz")
    params = {"profile": "p", "profiles": {"p": {}}, "datasets": {"m": {"source": "mnist", "split": "train"}},
              "defaults": {}, "experiments": {}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "GANLAB_DATA_DIRS": str(bad_dir), "GANLAB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "stages.prepare", "m"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "dataset 'm' (MNIST) cannot be prepared" in result.stderr
    assert str(bad_dir / "train-images-idx3-ubyte.gz") in result.stderr
    assert "expected f68b3c2dcbeaaa9fbdd348bbdeb94873" in result.stderr and "9fb629c4189551a2d022fa330f9573f3" in result.stderr
    assert not (tmp_path / "data" / "prepared").exists() or not any((tmp_path / "data" / "prepared").iterdir())


def test_stl10_images_are_stored_column_major():
    stored = np.arange(2 * 3 * 96 * 96, dtype=np.int64).astype(np.uint8).reshape(2, 3, 96, 96)  # [n, c, w, h]
    images = official.parse_stl_images(stored.tobytes())
    assert images.shape == (2, 3, 96, 96)
    assert images[1, 2, 5, 7] == stored[1, 2, 7, 5]  # row 5, column 7 is stored at w=7, h=5
    with pytest.raises(DataError, match="not a whole number"):
        official.parse_stl_images(b"\0" * 1000)


def test_stl10_archive_missing_or_wrong(data_dirs, tmp_path):
    data_dirs.append(tmp_path / "stl")
    with pytest.raises(DataError, match=r"(?s)stl10_binary.tar.gz not found.*http://ai.stanford.edu/~acoates/stl10/"):
        official.SOURCES["stl10"].load("train+unlabeled")
    (tmp_path / "stl").mkdir()
    fake = tmp_path / "stl" / "stl10_binary.tar.gz"
    fake.write_bytes(b"not the archive")
    with pytest.raises(DataError) as info:
        official.SOURCES["stl10"].load("train")
    assert str(fake) in str(info.value) and "91f7769df0f17e558f3565bffb0c7dfb" in str(info.value)
    assert files.md5(b"not the archive") in str(info.value)


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


def test_missing_image_folder_names_the_dataset_and_how_to_get_one(tmp_path):
    cfg = DatasetConfig(source="imagefolder", path=str(tmp_path / "icons"), resolution=32, split="all")
    with pytest.raises(DataError) as info:
        data.prepare_dataset(cfg, tmp_path / "out", name="icons64")
    message = str(info.value)
    assert message.startswith(f"dataset 'icons64' (image folder {tmp_path / 'icons'}) cannot be prepared: "
                              f"image folder {tmp_path / 'icons'} does not exist")
    assert "one sub-folder per class" in message and str(ICONS64.parent) in message and "oxygen-icon-theme" in message
    assert not (tmp_path / "out").exists()


def test_image_folder_checksums_catch_changed_added_and_missing_images(tmp_path):
    """The embedded icons carry Debian's md5 of every file: a changed, added or removed image is an
    error naming it, before anything is prepared."""
    folder = tmp_path / "icons"
    (folder / "apps").mkdir(parents=True)
    listing = []
    for src in sorted((ICONS64 / "apps").glob("*.png"))[:3]:
        shutil.copy(src, folder / "apps" / src.name)
        listing.append(f"{files.md5(src.read_bytes())}  apps/{src.name}")
    (folder / "MD5SUMS").write_text("\n".join(listing) + "\n")
    cfg = DatasetConfig(source="imagefolder", path=str(folder), resolution=16, split="all")
    assert len(folders.image_files(folder)[0]) == 3
    first = sorted((folder / "apps").iterdir())[0]
    original = first.read_bytes()
    first.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(DataError, match=f"{first}: md5 {files.md5(first.read_bytes())}, expected {files.md5(original)}"):
        data.prepare_dataset(cfg, tmp_path / "out")
    first.write_bytes(original)
    shutil.copy(first, folder / "apps" / "extra.png")
    with pytest.raises(DataError, match="extra.png: not listed in"):
        folders.image_files(folder)
    (folder / "apps" / "extra.png").unlink()
    first.unlink()
    with pytest.raises(DataError, match=f"{first}: listed in .* but missing"):
        folders.image_files(folder)
    assert not (tmp_path / "out").exists()


def test_embedded_icons_match_their_checksums():
    for folder in (ICONS64, ICONS_APPS128):
        files, _, classes = folders.image_files(folder)  # raises on any mismatch with MD5SUMS
        assert len(files) == len((folder / "MD5SUMS").read_text().splitlines())
    assert len(folders.image_files(ICONS64)[2]) == 9 and folders.image_files(ICONS_APPS128)[2] == ["apps"]


def test_a_bad_copy_is_passed_over_loudly_for_a_verified_one(data_dirs, embedded, tmp_path, capsys):
    bad = corrupt_copy(embedded / "mnist" / "t10k-images-idx3-ubyte.gz", tmp_path / "bad")
    data_dirs += [tmp_path / "bad", embedded]
    images, labels = official.ARRAY_SOURCES["mnist"].load("test")
    assert labels[:3].tolist() == [7, 2, 1] and images.shape == (10000, 1, 28, 28)
    warning = capsys.readouterr().err
    assert f"skipped a bad copy, using {embedded / 'mnist' / 't10k-images-idx3-ubyte.gz'}" in warning and str(bad) in warning

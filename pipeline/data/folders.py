"""Image folders: any folder of PNG / JPEG files, one sub-folder per class where labels are
needed, optionally with an MD5SUMS file that every image is checked against."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.core import progress
from pipeline.core.env import EMBEDDED_DIR
from pipeline.core.errors import DataError
from pipeline.data.files import md5

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


CHECKSUMS_FILE = "MD5SUMS"  # optional, in an image folder: `md5sum` lines, paths relative to the folder


def missing_folder_error(root: Path) -> DataError:
    return DataError(
        f"image folder {root} does not exist (looked for {root.resolve()}). An image folder is any folder "
        f"of PNG / JPEG files, with one sub-folder per class where labels are needed: set the dataset's "
        f"`path` to one. Real icons ship with this repository in {EMBEDDED_DIR / 'oxygen-icons'}; Debian's "
        f"oxygen-icon-theme package installs the full theme under /usr/share/icons/oxygen/base/."
    )


def image_files(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """Images under root; the class is the first-level sub-folder (one class when there is none).

    Symlinks that point at a file already listed are skipped: icon themes alias one picture
    under many names, and duplicates would skew every statistic.
    """
    if not root.is_dir():
        raise missing_folder_error(root)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    groups = [(d.name, sorted(d.rglob("*"))) for d in subdirs] or [(root.name, sorted(root.iterdir()))]
    seen, files, labels, classes = set(), [], [], []
    for name, paths in groups:
        picked = [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        picked = [p for p in picked if not (p.resolve() in seen or seen.add(p.resolve()))]
        if picked:
            labels += [len(classes)] * len(picked)
            classes.append(name)
            files += picked
    if not files:
        raise DataError(f"image folder {root} holds no {'/'.join(IMAGE_SUFFIXES)} files")
    verify_checksums(root, files)
    return files, labels, classes


def verify_checksums(root: Path, files: list[Path]) -> None:
    """If `root` holds an MD5SUMS file, every image must be listed there with its md5 (the
    embedded icons carry Debian's checksums): a changed, added or missing image is an error."""
    listing = root / CHECKSUMS_FILE
    if not listing.is_file():
        return
    expected = {}
    for line in listing.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            expected[(root / name.lstrip("*")).resolve()] = digest
    problems = []
    for path in files:
        digest = expected.pop(path.resolve(), None)
        actual = md5(path.read_bytes())
        if digest is None:
            problems.append(f"{path}: not listed in {listing}")
        elif actual != digest:
            problems.append(f"{path}: md5 {actual}, expected {digest} (corrupt or changed)")
    problems += [f"{path}: listed in {listing} but missing" for path in expected]
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise DataError(f"image folder {root} does not match its {CHECKSUMS_FILE}:\n  {shown}")


def load_image(path: Path, resolution: int) -> np.ndarray:
    """RGB uint8 3 x R x R: transparency composited on white, centre-cropped square, antialiased resize."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGBA")
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(canvas, img).convert("RGB")
    side = min(rgb.size)
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    rgb = rgb.crop((left, top, left + side, top + side))
    if side != resolution:
        rgb = rgb.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def load_image_folder(cfg) -> tuple[np.ndarray, np.ndarray, list[str]]:
    files, labels, classes = image_files(Path(cfg.path).expanduser())
    images = np.stack([load_image(p, cfg.resolution) for p in progress.bar(files, desc=f"read {cfg.path}", unit="img")])
    progress.line(f"read {len(images):,} images of {len(classes)} classes from {cfg.path}")
    return images, np.asarray(labels, dtype=np.int64), classes



"""The imagefolder dataset: one sub-folder per class of PNG or JPEG files, the layout
torchvision's ImageFolder reads. Each image is resized to `size`, kept in grayscale or RGB,
and scaled to [0, 1]; the class names are the folder names, in sorted order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layerlab.core.spec import Param

EXTENSIONS = (".png", ".jpg", ".jpeg")

OPTIONS = (
    Param("path", "text", "", help="The folder holding one sub-folder of images per class; "
          "relative to the project file."),
    Param("size", "shape", [28, 28], help="Every image is resized to [height, width]."),
    Param("color", "choice", "grayscale", choices=("grayscale", "rgb"),
          help="grayscale: 1 channel; rgb: 3 channels."),
)


class ImageFolderError(Exception):
    """A folder that cannot be read as classes of images; one sentence naming the file."""


@dataclass(frozen=True)
class Folder:
    classes: tuple[str, ...]
    files: tuple[tuple[Path, int], ...]  # (image, class id), by class then name


def scan(root: Path) -> Folder:
    """The classes and their image files; ImageFolderError when there is nothing to learn."""
    if not root.is_dir():
        raise ImageFolderError(f"{root} is not a folder")
    classes = tuple(sorted(d.name for d in root.iterdir()
                           if d.is_dir() and not d.name.startswith(".")))
    files = tuple((f, k) for k, name in enumerate(classes)
                  for f in sorted((root / name).iterdir())
                  if f.is_file() and f.suffix.lower() in EXTENSIONS)
    found = {k for _, k in files}
    if len(classes) < 2 or len(found) < len(classes):
        empty = [c for k, c in enumerate(classes) if k not in found]
        why = f"class folder {root / empty[0]} holds no PNG or JPEG images" if empty else \
            f"it has {len(classes)} class folder(s); an image folder needs one per class, " \
            "at least two"
        raise ImageFolderError(f"{root} cannot be read as an image folder: {why}")
    return Folder(classes, files)


def load_images(folder: Folder, size: tuple[int, int], color: str) -> torch.Tensor:
    """(N, C, H, W) float32 in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    mode = "L" if color == "grayscale" else "RGB"
    pixels = np.empty((len(folder.files), size[0], size[1], 1 if mode == "L" else 3),
                      dtype=np.uint8)
    for i, (path, _) in enumerate(folder.files):
        try:
            with Image.open(path) as image:
                resized = image.convert(mode).resize((size[1], size[0]),
                                                     Image.Resampling.BILINEAR)
                pixels[i] = np.asarray(resized).reshape(size[0], size[1], -1)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise ImageFolderError(f"{path} cannot be read as an image: "
                                   f"{str(exc).splitlines()[0] if str(exc) else exc!r}") \
                from None
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).to(torch.float32) / 255.0


def load(opts: dict[str, Any], base: Path | None) -> tuple[torch.Tensor, torch.Tensor,
                                                           tuple[str, ...]]:
    if not opts["path"]:
        raise ImageFolderError("the imagefolder dataset needs option path (the folder of "
                               "class sub-folders)")
    size = opts["size"]
    if len(size) != 2 or any(d < 1 for d in size):
        raise ImageFolderError(f"dataset imagefolder: option size must be [height, width] of "
                               f"positive sizes, not {size!r}")
    root = Path(opts["path"]).expanduser()
    if base is not None and not root.is_absolute():
        root = base / root
    folder = scan(root)
    x = load_images(folder, (size[0], size[1]), opts["color"])
    y = torch.tensor([k for _, k in folder.files], dtype=torch.int64)
    return x, y, folder.classes

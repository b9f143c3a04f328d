"""Real fine-grained data sets laid out one folder per class (CUB-200, Stanford Cars, ...)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .._optional import require

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".ppm", ".tif", ".tiff", ".webp")


class ImageFolderDataset(Dataset):
    """root/<class name>/<image file>: classes are the sub-folders in sorted order.

    Files whose extension is not an image extension are ignored. Items are (image, label):
    without a transform the image is an RGB (3, H, W) float32 tensor in [0, 1]; with one,
    transform receives the PIL image. A file Pillow cannot read raises an error naming it.

    Attributes: classes (names), samples ([(path, label)]), targets ((N,) int64),
    class_counts ((C,) int64).
    """

    def __init__(self, root: Union[str, os.PathLike],
                 transform: Optional[Callable[[Any], Any]] = None,
                 *, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> None:
        require("PIL.Image", "ImageFolderDataset")  # here, not later in a loader worker
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder root {self.root} is not a directory")
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if not self.classes:
            raise ValueError(f"{self.root} has no class sub-folders")
        self.samples = []
        for label, name in enumerate(self.classes):
            files = sorted(p for p in (self.root / name).rglob("*")
                           if p.is_file() and p.suffix.lower() in extensions)
            if not files:
                raise ValueError(f"class folder {self.root / name} holds no image files")
            self.samples += [(p, label) for p in files]
        self.transform = transform
        self.targets = torch.tensor([label for _, label in self.samples], dtype=torch.int64)
        self.class_counts = torch.bincount(self.targets, minlength=len(self.classes))

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        from PIL import Image  # present: __init__ required it

        path, label = self.samples[index]
        try:
            with Image.open(path) as img:
                image = img.convert("RGB")
        except Exception as e:  # Pillow raises several types for broken files
            raise RuntimeError(f"cannot read image file {path}: {e}") from e
        if self.transform is not None:
            return self.transform(image), label
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
        return pixels.permute(2, 0, 1).float() / 255.0, label

"""Bring-your-own image folders: classes, labels, captions and input errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from genunlearn.data.folders import load_folder
from genunlearn.types import GenUnlearnError


def _png(path, rgb, size=(10, 7), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, rgb).save(path)


@pytest.fixture
def data(tmp_path):
    _png(tmp_path / "dog" / "d1.png", (0, 0, 255))
    _png(tmp_path / "cat" / "b.png", (0, 255, 0))
    _png(tmp_path / "cat" / "a.png", (255, 0, 0, 255), mode="RGBA")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()  # no images: not a class
    (tmp_path / "loose.png").write_bytes(b"")  # files at the root are ignored
    return tmp_path


def test_classes_labels_and_default_captions(data):
    imgs, labels, caps, classes = load_folder(data, size=8)
    assert classes == ["cat", "dog"]
    assert imgs.shape == (3, 8, 8, 3) and imgs.dtype == np.uint8
    assert labels.shape == (3, 1) and labels.dtype == np.int64
    # Sorted classes, sorted files within a class: cat/a, cat/b, dog/d1.
    assert labels[:, 0].tolist() == [0, 0, 1]
    assert caps == ["a cat", "a cat", "a dog"]
    expected = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    for img, rgb in zip(imgs, expected, strict=True):
        assert np.abs(img.astype(int) - np.asarray(rgb)).max() <= 1


def test_captions_file_overrides_per_image(data):
    (data / "captions.csv").write_text(
        "file,caption\ncat/b.png,a green cat\ndog/d1.png,a blue dog\n"
    )
    _, _, caps, _ = load_folder(data, size=4)
    assert caps == ["a cat", "a green cat", "a blue dog"]


def test_captions_file_with_wrong_columns(data):
    (data / "captions.csv").write_text("path,text\ncat/b.png,x\n")
    with pytest.raises(GenUnlearnError) as e:
        load_folder(data)
    assert "captions.csv" in str(e.value) and "'file'" in str(e.value)


def test_missing_directory(tmp_path):
    with pytest.raises(GenUnlearnError) as e:
        load_folder(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value) and "not a directory" in str(e.value)


def test_directory_without_class_folders(tmp_path):
    _png(tmp_path / "x.png", (1, 2, 3))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.md").write_text("hi")
    with pytest.raises(GenUnlearnError) as e:
        load_folder(tmp_path)
    assert "sub-folder per class" in str(e.value) and ".png" in str(e.value)

"""predict_files.py: the images --image names and the output stems, against hand-worked cases
on files the test makes."""
import os

import pytest

import predict_files
from guards import FCNError


def touch(folder, *names):
    os.makedirs(folder, exist_ok=True)
    for name in names:
        with open(os.path.join(folder, name), "wb"):
            pass


def test_a_folder_gives_its_images_sorted_and_nothing_else(tmp_path):
    folder = str(tmp_path / "photos")
    touch(folder, "b.png", "a.JPG", "c.webp", "notes.txt", "d.jpeg.bak")
    os.makedirs(os.path.join(folder, "sub.png"))  # a folder named like an image is skipped too
    assert predict_files.list_images(folder) == [
        os.path.join(folder, name) for name in ("a.JPG", "b.png", "c.webp")]


def test_a_file_is_taken_as_it_is(tmp_path):
    touch(str(tmp_path), "scan.tif")
    path = str(tmp_path / "scan.tif")
    assert predict_files.list_images(path) == [path]


def test_a_folder_without_images_and_a_missing_path_are_refused(tmp_path):
    touch(str(tmp_path), "readme.txt")
    with pytest.raises(FCNError, match="--image .* is a folder with no images \\(.jpg, "):
        predict_files.list_images(str(tmp_path))
    with pytest.raises(FCNError, match="--image .*gone.png does not exist; pass an image file"):
        predict_files.list_images(str(tmp_path / "gone.png"))


def test_output_stems():
    assert predict_files.output_stems(["a/x.jpg", "a/y.png"]) == {"a/x.jpg": "x", "a/y.png": "y"}
    assert predict_files.output_stems(["a/same.jpg", "a/same.png", "a/other.png"]) == {
        "a/same.jpg": "same_jpg", "a/same.png": "same_png", "a/other.png": "other"}
    # A file already named like the disambiguated one keeps its name; the other gets a number.
    assert predict_files.output_stems(["a/same.jpg", "a/same.png", "a/same_jpg.png"]) == {
        "a/same.jpg": "same_jpg_2", "a/same.png": "same_png", "a/same_jpg.png": "same_jpg"}

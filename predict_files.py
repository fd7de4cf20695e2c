"""Which files --mode=predict reads and the names of what it writes: the images at --image (a
file or a folder) and one output stem per image that no other image's outputs overwrite. No
TensorFlow here.
"""
import os

from guards import FCNError
from image_files import IMAGE_EXTENSIONS


def list_images(path):
    """The image files at --image path: the file itself, or the image files in the folder
    (sorted; not its subfolders, even one named like an image)."""
    if os.path.isdir(path):
        found = sorted(os.path.join(path, name) for name in os.listdir(path)
                       if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
                       and os.path.isfile(os.path.join(path, name)))
        if not found:
            raise FCNError("--image %s is a folder with no images (%s)"
                           % (path, ", ".join(IMAGE_EXTENSIONS)))
        return found
    if not os.path.exists(path):
        raise FCNError("--image %s does not exist; pass an image file or a folder" % path)
    return [path]


def output_stems(paths):
    """{path: the stem of its outputs}: the file's stem, or, for inputs that share a stem
    (same.jpg, same.png), the stem and the source's extension (same_jpg), so that no result
    overwrites another. Where that still collides (a file named same_jpg.png), a number is
    added."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    counts = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    # Unique stems first: their names never change.
    result = {p: stem for p, stem in zip(paths, stems) if counts[stem] == 1}
    taken = set(result.values())
    for path, stem in zip(paths, stems):
        if counts[stem] == 1:
            continue
        name = "%s_%s" % (stem, os.path.splitext(path)[1][1:])
        candidate, k = name, 2
        while candidate in taken:
            candidate, k = "%s_%d" % (name, k), k + 1
        taken.add(candidate)
        result[path] = candidate
    return {p: result[p] for p in paths}

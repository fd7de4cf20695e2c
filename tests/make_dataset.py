"""A small, learnable dataset in the exact ADEChallengeData2016 layout, for the tests.

    <root>/ADEChallengeData2016/images/training/ADE_train_00000001.jpg ...
    <root>/ADEChallengeData2016/annotations/training/ADE_train_00000001.png ...
    <root>/ADEChallengeData2016/images/validation/ADE_val_00000001.jpg ...
    <root>/ADEChallengeData2016/annotations/validation/ADE_val_00000001.png ...
    <root>/ADEChallengeData2016/objectInfo150.txt

Each image shows a few rectangles and ellipses of the classes in SCENE_CLASSES on a class-0
background; every class has its own colour and texture, so that a tiny FCN learns them at 64x64.
Training image GRAYSCALE_INDEX is a grayscale JPEG; one more training image, the last, has no
annotation (so a split holds n_train records).

    python tests/make_dataset.py <root> [n_train] [n_val]
"""
import os
import sys
import zipfile

import numpy as np

import imageio.v2 as imageio

DATASET_FOLDER = "ADEChallengeData2016"

# The first classes of ADE20K, with their real names; each gets a colour and a texture.
SCENE_CLASSES = {1: "wall", 2: "building;edifice", 3: "sky", 4: "floor;flooring", 5: "tree"}
CLASS_COLOURS = {0: (70, 70, 70), 1: (205, 185, 150), 2: (170, 60, 40), 3: (80, 140, 230),
                 4: (125, 85, 40), 5: (40, 150, 50)}
GRAYSCALE_INDEX = 3  # ADE_train_00000003.jpg is a grayscale JPEG


def train_name(index):
    return "ADE_train_%08d" % index


def val_name(index):
    return "ADE_val_%08d" % index


def _texture(label, rows, cols, rng):
    """A value in [0, 1] per pixel: the pattern of class label."""
    if label == 1:  # horizontal stripes
        return ((rows // 3) % 2).astype(np.float64)
    if label == 2:  # a checkerboard of 4-pixel bricks
        return (((rows // 4) + (cols // 4)) % 2).astype(np.float64)
    if label == 3:  # smooth
        return np.full(rows.shape, 0.5)
    if label == 4:  # diagonal stripes
        return (((rows + cols) // 3) % 2).astype(np.float64)
    if label == 5:  # leaves: coarse speckle
        return rng.random(rows.shape)
    return rng.random(rows.shape) * 0.5  # background: faint noise


def random_shape(rows, cols, rng):
    """The mask of a rectangle or an ellipse, 30 to 60% of the image's height and width, at a
    random place; rows, cols: np.mgrid of the image."""
    height, width = rows.shape
    h = int(rng.integers(height * 3 // 10, height * 6 // 10))
    w = int(rng.integers(width * 3 // 10, width * 6 // 10))
    top, left = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
    if rng.random() < 0.5:
        return (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    cy, cx = top + h / 2.0, left + w / 2.0
    return ((rows - cy) / (h / 2.0)) ** 2 + ((cols - cx) / (w / 2.0)) ** 2 <= 1.0


def _draw_scene(height, width, rng, classes=tuple(SCENE_CLASSES), colours=None):
    """(rgb uint8 [h,w,3], label uint8 [h,w]) of one scene with objects of the given classes,
    each class in its colour (CLASS_COLOURS unless colours is given) and texture."""
    colours = colours or CLASS_COLOURS
    rows, cols = np.mgrid[0:height, 0:width]
    label = np.zeros((height, width), np.uint8)
    for _ in range(rng.integers(2, 4)):
        cls = int(rng.choice(list(classes)))
        label[random_shape(rows, cols, rng)] = cls
    image = np.zeros((height, width, 3), np.float64)
    for cls, colour in colours.items():
        where = label == cls
        if where.any():
            shade = 0.7 + 0.3 * _texture(cls, rows, cols, rng)
            image[where] = np.outer(shade[where], colour)
    image += rng.normal(0.0, 4.0, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def _write_pair(dataset_dir, split, name, size_range, rng, grayscale=False, annotate=True):
    height, width = (int(rng.integers(size_range[0], size_range[1] + 1)) for _ in range(2))
    image, label = _draw_scene(height, width, rng)
    if grayscale:
        image = (image @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    imageio.imwrite(os.path.join(dataset_dir, "images", split, name + ".jpg"), image, quality=95)
    if annotate:
        imageio.imwrite(os.path.join(dataset_dir, "annotations", split, name + ".png"), label)


def make_scale_shift_dataset(root, n_train=40, n_val=10, size=64, val_scale=2, seed=0):
    """Writes <root>/ADEChallengeData2016 whose classes differ only by texture (one grey for
    all), the training scenes size x size and the validation scenes drawn the same way and then
    enlarged val_scale times (nearest neighbour): objects and textures at val_scale times the
    training's scale, which a network trained at one scale does not recognise. What
    augmentation's random scale is for (tests/test_learning.py). Returns the folder."""
    rng = np.random.default_rng(seed)
    dataset_dir = os.path.join(root, DATASET_FOLDER)
    for kind in ("images", "annotations"):
        for split in ("training", "validation"):
            os.makedirs(os.path.join(dataset_dir, kind, split), exist_ok=True)
    grey = {cls: (128, 128, 128) for cls in CLASS_COLOURS}
    for split, count, scale, name in (("training", n_train, 1, train_name),
                                      ("validation", n_val, val_scale, val_name)):
        for index in range(1, count + 1):
            image, label = _draw_scene(size, size, rng, colours=grey)
            image = np.kron(image, np.ones((scale, scale, 1), np.uint8))
            label = np.kron(label, np.ones((scale, scale), np.uint8))
            imageio.imwrite(os.path.join(dataset_dir, "images", split, name(index) + ".png"),
                            image)
            imageio.imwrite(os.path.join(dataset_dir, "annotations", split,
                                         name(index) + ".png"), label)
    write_object_info(os.path.join(dataset_dir, "objectInfo150.txt"))
    return dataset_dir


def write_object_info(path):
    """objectInfo150.txt: the real header and 150 lines; invented figures and names, but the real
    names of the classes in SCENE_CLASSES."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("Idx\tRatio\tTrain\tVal\tName\n")
        for index in range(1, 151):
            name = SCENE_CLASSES.get(index, "thing%d" % index)
            f.write("%d\t%.4f\t%d\t%d\t%s\n" % (index, 0.1 / index, 20000 // index,
                                                  2000 // index, name))


def make_scene_dataset(root, n_train=24, n_val=8, size_range=(64, 100), seed=0):
    """Writes <root>/ADEChallengeData2016 (n_train + 1 training images, the last without
    annotation, and n_val validation pairs); returns the path of that folder."""
    rng = np.random.default_rng(seed)
    dataset_dir = os.path.join(root, DATASET_FOLDER)
    for kind in ("images", "annotations"):
        for split in ("training", "validation"):
            os.makedirs(os.path.join(dataset_dir, kind, split), exist_ok=True)
    for index in range(1, n_train + 1):
        _write_pair(dataset_dir, "training", train_name(index), size_range, rng,
                    grayscale=index == GRAYSCALE_INDEX)
    _write_pair(dataset_dir, "training", train_name(n_train + 1), size_range, rng, annotate=False)
    for index in range(1, n_val + 1):
        _write_pair(dataset_dir, "validation", val_name(index), size_range, rng)
    write_object_info(os.path.join(dataset_dir, "objectInfo150.txt"))
    return dataset_dir


# The --dataset=folder layout: classes.txt's class k is drawn as the scene class FOLDER_LOOKS[k].
FOLDER_CLASSES = ("background", "wall", "sky")
FOLDER_LOOKS = (0, 1, 3)
IGNORE_LABEL = 255


def boundaries(label):
    """Pixels whose 4-neighbourhood holds another label: VOC's 'void' band around objects."""
    padded = np.pad(label, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    return ((padded[:-2, 1:-1] != centre) | (padded[2:, 1:-1] != centre)
            | (padded[1:-1, :-2] != centre) | (padded[1:-1, 2:] != centre))


def make_folder_dataset(root, n_train=8, n_val=4, size_range=(64, 96), seed=0,
                        class_names=FOLDER_CLASSES, looks=FOLDER_LOOKS):
    """Writes a --dataset=folder tree in root: classes.txt, images/{training,validation}/*.png
    (every other one a .jpg), annotations/.../*.png of class indices with IGNORE_LABEL on the
    objects' boundaries. Returns root."""
    rng = np.random.default_rng(seed)
    to_class = np.zeros(256, np.uint8)
    to_class[list(looks)] = np.arange(len(looks))
    for split, count in (("training", n_train), ("validation", n_val)):
        for kind in ("images", "annotations"):
            os.makedirs(os.path.join(root, kind, split), exist_ok=True)
        for index in range(count):
            height, width = (int(rng.integers(size_range[0], size_range[1] + 1)) for _ in "hw")
            image, scene = _draw_scene(height, width, rng, classes=looks[1:])
            label = to_class[scene]
            label[boundaries(label)] = IGNORE_LABEL
            stem = "%s_%04d" % (split, index)
            extension = ".jpg" if index % 2 else ".png"
            imageio.imwrite(os.path.join(root, "images", split, stem + extension), image)
            imageio.imwrite(os.path.join(root, "annotations", split, stem + ".png"), label)
    with open(os.path.join(root, "classes.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(class_names) + "\n")
    return root


def make_dataset_zip(root, zip_path):
    """Zips <root>/ADEChallengeData2016 as the real zip holds it: entries
    ADEChallengeData2016/..., folders included."""
    dataset_dir = os.path.join(root, DATASET_FOLDER)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder, subfolders, files in os.walk(dataset_dir):
            subfolders.sort()
            archive.write(folder, os.path.relpath(folder, root))
            for name in sorted(files):
                path = os.path.join(folder, name)
                archive.write(path, os.path.relpath(path, root))
    return zip_path


if __name__ == "__main__":
    counts = [int(a) for a in sys.argv[2:4]]
    print(make_scene_dataset(sys.argv[1], *counts))

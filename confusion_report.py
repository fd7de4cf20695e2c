"""The confusion matrix of --mode=validate as data and as a picture: confusion.npy (the matrix,
ground truth in rows, predictions in columns), confusion.csv (with the class names),
confusion.png (the most confused classes, each row as fractions of its pixels) and the most
confused pairs, printed. No TensorFlow here.
"""
import csv
import os

import numpy as np
from PIL import Image, ImageDraw

from guards import atomic_path, writing
from pictures import write_image_atomically

NPY_NAME, CSV_NAME, PNG_NAME = "confusion.npy", "confusion.csv", "confusion.png"


def scored_classes(confusion, ignore_label):
    """The class indices the metrics score: every class but the ignore label."""
    return [k for k in range(len(confusion)) if k != ignore_label]


def off_diagonal_mass(confusion, ignore_label=None):
    """Per class, the pixels confused with it either way: its row and its column less its
    diagonal (the ignore label's own are 0)."""
    confusion = np.asarray(confusion, np.int64)
    mass = confusion.sum(axis=0) + confusion.sum(axis=1) - 2 * np.diag(confusion)
    if ignore_label is not None and 0 <= ignore_label < len(mass):
        mass[ignore_label] = 0
    return mass


def most_confused_classes(confusion, count=20, ignore_label=None):
    """The `count` classes with the most off-diagonal mass, most first (ties: lower index), none
    with nothing confused."""
    mass = off_diagonal_mass(confusion, ignore_label)
    order = sorted(np.flatnonzero(mass), key=lambda k: (-mass[k], k))
    return [int(k) for k in order[:count]]


def most_confused_pairs(confusion, count=10, ignore_label=None):
    """[(true class, predicted class, pixels, their fraction of the true class's pixels)] of
    the `count` largest off-diagonal entries, largest first (ties: lower indices)."""
    confusion = np.asarray(confusion, np.int64)
    rows = confusion.sum(axis=1)
    pairs = [(int(t), int(p), int(confusion[t, p])) for t, p in zip(*np.nonzero(confusion))
             if t != p and ignore_label not in (t, p)]
    pairs.sort(key=lambda pair: (-pair[2], pair[0], pair[1]))
    return [(t, p, n, n / rows[t]) for t, p, n in pairs[:count]]


def format_pairs(pairs, class_names):
    lines = ["the most confused pairs (ground truth -> prediction):"]
    for true, predicted, pixels, fraction in pairs:
        lines.append("  %-24s -> %-24s %9d pixels, %5.1f%% of %s"
                     % (class_names[true][:24], class_names[predicted][:24], pixels,
                        100 * fraction, class_names[true][:24]))
    return "\n".join(lines)


def write_csv(path, confusion, class_names):
    with writing(path), atomic_path(path) as part:
        with open(part, "w", newline="", encoding="utf-8") as f:
            table = csv.writer(f)
            table.writerow(["ground truth \\ prediction"] + list(class_names))
            for name, row in zip(class_names, np.asarray(confusion).tolist()):
                table.writerow([name] + row)


def write_npy(path, confusion):
    with writing(path), atomic_path(path) as part:
        with open(part, "wb") as f:
            np.save(f, np.asarray(confusion, np.int64))


# ---- the picture ---------------------------------------------------------------------------------

CELL, NAME_WIDTH, SCALE_WIDTH = 22, 170, 60


def heat_colour(fraction):
    """White at 0 to dark red at 1."""
    fraction = float(np.clip(fraction, 0, 1))
    return (255, int(255 * (1 - fraction) ** 0.7), int(255 * (1 - fraction)))


def confusion_picture(confusion, class_names, ignore_label=None, count=20):
    """uint8 RGB: the `count` most confused classes as a grid, rows (ground truth) divided by
    their pixels, names beside the rows and numbered over the columns, a colour scale and a
    legend. None when nothing is confused."""
    classes = most_confused_classes(confusion, count, ignore_label)
    if not classes:
        return None
    confusion = np.asarray(confusion, np.float64)
    rows = confusion[classes][:, classes]
    totals = confusion[classes].sum(axis=1, keepdims=True)
    fractions = np.divide(rows, totals, out=np.zeros_like(rows), where=totals > 0)
    n = len(classes)
    top, left = 40, NAME_WIDTH
    width, height = left + n * CELL + SCALE_WIDTH + 10, top + n * CELL + 50
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), "ground truth (rows) -> prediction (columns), each row as fractions of "
              "its pixels", fill="black")
    for i, k in enumerate(classes):
        y = top + i * CELL
        draw.text((4, y + 5), ("%d %s" % (k, class_names[k]))[:26], fill="black")
        draw.text((left + i * CELL + 3, top - 14), str(i + 1), fill="black")
        for j in range(n):
            x = left + j * CELL
            draw.rectangle([x, y, x + CELL - 1, y + CELL - 1], fill=heat_colour(fractions[i, j]),
                           outline=(200, 200, 200))
    draw.text((4, top - 14), "columns: the rows' order", fill="black")
    scale_x = left + n * CELL + 15
    for step in range(n * CELL):
        draw.line([scale_x, top + step, scale_x + 14, top + step],
                  fill=heat_colour(1 - step / (n * CELL - 1)))
    draw.text((scale_x + 18, top - 4), "1.0", fill="black")
    draw.text((scale_x + 18, top + n * CELL - 10), "0.0", fill="black")
    draw.text((4, top + n * CELL + 8), "%d most confused of %d classes (by pixels confused "
              "either way)" % (n, len(scored_classes(confusion, ignore_label))), fill="black")
    return np.asarray(canvas)


def write_report(folder, confusion, class_names, ignore_label):
    """Writes confusion.npy, .csv and .png into folder; returns (their paths, the lines of the
    most confused pairs)."""
    paths = [os.path.join(folder, name) for name in (NPY_NAME, CSV_NAME, PNG_NAME)]
    write_npy(paths[0], confusion)
    write_csv(paths[1], confusion, class_names)
    picture = confusion_picture(confusion, class_names, ignore_label)
    if picture is None:
        paths.pop()
    else:
        write_image_atomically(paths[2], picture)
    pairs = most_confused_pairs(confusion, 10, ignore_label)
    return paths, format_pairs(pairs, class_names)

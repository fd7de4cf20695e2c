"""The pictures the modes write: PNGs written atomically, label maps in colour, predictions over
their photo, side-by-side panels and their legends. numpy, imageio and Pillow; no TensorFlow.
"""
import os

import numpy as np
from PIL import Image, ImageDraw

import imageio.v2 as imageio

from datasets import full_palette
from guards import atomic_path, writing


def write_image_atomically(path, image):
    """Writes a PNG to path through a temporary name, so that no half-written image is left; a
    full disk (or another write error) is the one-line FCNError."""
    with writing(path), atomic_path(path) as part:
        imageio.imwrite(part, np.asarray(image), format="PNG")
    return path


def save_image(image, save_dir, name):
    """Writes image (HxW or HxWxC, values 0..255) to <save_dir>/<name>.png (the reference's
    name)."""
    return write_image_atomically(os.path.join(save_dir, name + ".png"),
                                  np.asarray(image).astype(np.uint8))


def colorize(labels, palette):
    """Labels [H,W] or [H,W,1] (0..255) -> an RGB uint8 image with the palette's colours."""
    labels = np.asarray(labels)
    if labels.ndim == 3:
        labels = labels[..., 0]
    return full_palette(palette)[labels.astype(np.intp)]


def blend(image, colours, alpha=0.5, band=256):
    """The colour map laid over the image, alpha of the colours (both uint8 RGB, same size).
    Done `band` rows at a time: float32 temporaries at a large photo's size would make the
    overlay, not the network, predict's peak memory."""
    image, colours = np.asarray(image), np.asarray(colours)
    out = np.empty(image.shape, np.uint8)
    for start in range(0, image.shape[0], band):
        rows = slice(start, start + band)
        mixed = ((1 - alpha) * image[rows].astype(np.float32)
                 + alpha * colours[rows].astype(np.float32))
        out[rows] = np.clip(np.rint(mixed), 0, 255)
    return out


def with_legend(picture, labels_present, class_names, palette):
    """picture (uint8 RGB) above a legend: a colour swatch, number and name per label present.
    The picture keeps its pixels; the canvas is at least one legend entry wide."""
    height, width = picture.shape[:2]
    entry_width, line_height = 160, 14
    canvas_width = max(width, entry_width)
    columns = max(1, canvas_width // entry_width)
    legend_rows = (len(labels_present) + columns - 1) // columns
    canvas = Image.new("RGB", (canvas_width, height + 4 + legend_rows * line_height), "white")
    canvas.paste(Image.fromarray(np.asarray(picture, np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    colours = full_palette(palette)
    for i, k in enumerate(labels_present):
        x = (i % columns) * entry_width + 2
        y = height + 4 + (i // columns) * line_height
        draw.rectangle([x, y + 1, x + 10, y + 11], fill=tuple(int(c) for c in colours[k]),
                       outline="black")
        name = class_names[k] if k < len(class_names) else "ignored"
        draw.text((x + 14, y), ("%d %s" % (k, name))[:24], fill="black")
    return np.asarray(canvas)


def labels_present(*label_maps):
    """The sorted label values that occur in any of the maps."""
    return sorted(set().union(*(np.unique(np.asarray(m)).tolist() for m in label_maps)))


def side_by_side_panel(image, ground_truth, prediction, class_names, palette,
                       min_tile_width=256):
    """input | ground truth | prediction in colour, above a legend of the classes present, by
    name."""
    gt = np.asarray(ground_truth).reshape(np.asarray(ground_truth).shape[:2])
    pred = np.asarray(prediction).reshape(gt.shape)
    row = np.concatenate([np.asarray(image, np.uint8), colorize(gt, palette),
                          colorize(pred, palette)], axis=1)
    # Small inputs are enlarged (nearest neighbour, so labels stay crisp) to a readable size.
    zoom = max(1, -(-min_tile_width // gt.shape[1]))
    row = row.repeat(zoom, axis=0).repeat(zoom, axis=1)
    return with_legend(row, labels_present(gt, pred), class_names, palette)


def largest_labels(labels, limit):
    """The label values covering the most pixels, at most limit of them, largest first."""
    counts = np.bincount(np.asarray(labels, np.intp).reshape(-1), minlength=256)
    present = np.flatnonzero(counts)
    return present[np.argsort(-counts[present], kind="stable")][:limit].tolist()


def prediction_overlay(image, labels, class_names, palette, legend_entries=12):
    """The predicted colours blended over the image, at its size, above a small legend of the
    classes covering the most pixels (an untrained model can scatter dozens of classes)."""
    return with_legend(blend(image, colorize(labels, palette)),
                       largest_labels(labels, legend_entries), class_names, palette)

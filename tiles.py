"""Predicting a large image tile by tile, in memory bounded by the tile and not by the image.

The image (already padded to a multiple of 32) is cut into overlapping tiles whose origins are
multiples of 32, so that every tile sees the pooling grid the whole image would. Each tile's
labels are kept only in its interior, away from the borders it shares with its neighbours, where
the network sees zeros instead of the neighbour's pixels; the kept interiors tile the image
exactly. At the image's own borders a tile keeps up to the edge, where the untiled run saw the
same padding. No TensorFlow here: the network is the function passed in.
"""
import numpy as np

ALIGN = 32  # the network's total downsampling: tile origins and sizes are multiples of it


def pad_to_multiple(image, multiple, fill):
    """image [h,w,3] padded at the bottom and right to multiples of `multiple`, with the pixel
    fill (the mean pixel: zero once the network subtracts it). Returns (padded, (h, w))."""
    h, w = image.shape[:2]
    padded_h, padded_w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    padded = np.empty((padded_h, padded_w, 3), dtype=np.float32)
    padded[:] = np.asarray(fill, dtype=np.float32)
    padded[:h, :w] = image
    return padded, (h, w)


def tiling_problem(tile, overlap, align=ALIGN):
    """None when tiles of `tile` pixels overlapping by `overlap` can be cut; else what is wrong,
    in words that name the flags. tile 0 means no tiling."""
    if tile == 0:
        return None
    if tile < 0 or tile % align:
        return "--tile_size=%d: it must be 0 (no tiles) or a positive multiple of %d" % (
            tile, align)
    if overlap < 0:
        return "--tile_overlap=%d: it must be 0 or more" % overlap
    if tile - overlap < align:
        return ("--tile_overlap=%d leaves tiles of --tile_size=%d less than %d new pixels; "
                "lower it below %d" % (overlap, tile, align, tile - align + 1))
    return None


def spans(length, tile, overlap, align=ALIGN):
    """The tiles along one axis of `length` pixels (a multiple of align): a list of
    (start, end, keep_start, keep_end); tile k covers [start, end) and its labels are kept in
    [keep_start, keep_end). The kept ranges cover [0, length) once, in order.

    Tiles are `tile` long and start every `tile - overlap` pixels, rounded down to a multiple of
    align; the last one ends at length. Two neighbours split their overlap in the middle, so that
    each kept range has at least overlap // 2 pixels of context on every side inside the image.
    An axis no longer than a tile is one tile. tile 0: one tile, the whole axis.
    """
    if tile == 0 or length <= tile:
        return [(0, length, 0, length)]
    stride = (tile - overlap) // align * align
    starts = list(range(0, length - tile, stride)) + [length - tile]
    result, keep_start = [], 0
    for start, following in zip(starts, starts[1:] + [None]):
        end = start + tile
        keep_end = length if following is None else (following + end) // 2
        result.append((start, end, keep_start, keep_end))
        keep_start = keep_end
    return result


def tiles(height, width, tile, overlap, align=ALIGN):
    """The 2-D tiles of a height x width image: (row span, column span) pairs, rows first."""
    return [(rows, cols) for rows in spans(height, tile, overlap, align)
            for cols in spans(width, tile, overlap, align)]


def predict_tiled(image, tile, overlap, predict, align=ALIGN):
    """The [H, W] uint8 labels of image [H, W, C] (H and W multiples of align), computed tile by
    tile by predict(crop [h, w, C]) -> labels [h, w], each tile's kept interior stitched in."""
    height, width = image.shape[:2]
    labels = np.empty((height, width), dtype=np.uint8)
    for (y0, y1, ky0, ky1), (x0, x1, kx0, kx1) in tiles(height, width, tile, overlap, align):
        piece = predict(image[y0:y1, x0:x1])
        labels[ky0:ky1, kx0:kx1] = piece[ky0 - y0:ky1 - y0, kx0 - x0:kx1 - x0]
    return labels


def downscaled_size(height, width, max_size):
    """(h, w) with the longer side at most max_size and the aspect ratio kept (rounded, at least
    1 pixel); the size itself when it fits or max_size is 0."""
    longest = max(height, width)
    if max_size == 0 or longest <= max_size:
        return height, width
    scale = max_size / float(longest)
    return (min(max_size, max(1, int(round(height * scale)))),
            min(max_size, max(1, int(round(width * scale)))))

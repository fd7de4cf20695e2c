"""Running a network over a large image stage by stage, each stage in tiles that carry the halo
that stage needs, so that the result equals one pass over the whole image while memory is
bounded by the tiles, not by the image. No TensorFlow here: the stages are functions passed in.

A stage reads maps of the image at some scales (1: the image's pixels, 4: a quarter of its
side...) and writes one map. An output pixel depends on input pixels at most `reach` image
pixels away; a tile keeps the output of its own region, and its inputs are cut from that region
widened by the halo (the reach rounded up to the stage's grid) on every side inside the image.
At the image's own borders a tile ends where the image ends, so that it sees the zero padding
the whole image sees there; inside, its halo holds the real neighbours, and whatever its own
padding spoils lies in the halo it does not keep. Tiles start on the stage's grid (its coarsest
scale), so that every pooling window in a tile is one of the whole image's.
"""
import collections

import numpy as np

ALIGN = 32  # the network's total downsampling: images are padded to multiples of it

# A stage's geometry. inputs: ((map name, scale), ...); output: (map name, scale); reach: how
# far, in image pixels, an output pixel sees into the inputs; grid: the image pixels its tiles
# start on; tile: its tiles' side in units of the base tile side, 0 for one tile (the whole
# image: a stage whose values would differ in the last bits from one tile to another).
StageGeometry = collections.namedtuple("StageGeometry", "name inputs output reach grid tile")


def pad_to_multiple(image, multiple, fill):
    """image [h,w,3] padded at the bottom and right to multiples of `multiple`, with the pixel
    fill (the mean pixel: zero once the network subtracts it). Returns (padded, (h, w))."""
    return PaddedImage(image, multiple, fill)[:, :], image.shape[:2]


class PaddedImage:
    """An image as pad_to_multiple pads it, without that float32 copy at the image's size: each
    crop (image[rows, cols], slices) is padded and converted as it is cut, to the same values.
    The first stage's tiles are cut from it; the uint8 image is a quarter of the float one."""

    def __init__(self, image, multiple, fill):
        self.image, self.fill = image, np.asarray(fill, dtype=np.float32)
        h, w = image.shape[:2]
        self.shape = (-(-h // multiple) * multiple, -(-w // multiple) * multiple) + image.shape[2:]

    def __getitem__(self, key):
        (y0, y1, _), (x0, x1, _) = (part.indices(side) for part, side in zip(key, self.shape))
        h, w = self.image.shape[:2]
        crop = np.empty((y1 - y0, x1 - x0) + self.shape[2:], dtype=np.float32)
        crop[:] = self.fill
        crop[:max(0, min(y1, h) - y0), :max(0, min(x1, w) - x0)] = self.image[y0:y1, x0:x1]
        return crop


def aligned_empty(shape, dtype, align=64):
    """np.empty(shape, dtype) starting on an `align`-byte boundary. TensorFlow feeds such an
    array to the network as it is, and copies any other first: a stage run whole (one tile,
    its input the whole map) would otherwise hold its inputs twice."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(size + align, dtype=np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + size].view(dtype).reshape(shape)


def tiling_problem(tile, align=ALIGN):
    """None when tiles of `tile` pixels can be cut; else what is wrong, in words that name the
    flag. tile 0 means no tiling."""
    if tile == 0 or (tile > 0 and tile % align == 0):
        return None
    return "--tile_size=%d: it must be 0 (no tiles) or a positive multiple of %d" % (tile, align)


def halo(stage):
    """The stage's reach rounded up to its grid: how far its tiles' inputs reach past the tile."""
    return -(-stage.reach // stage.grid) * stage.grid


def spans(length, side, halo_pixels):
    """The tiles along one axis of `length` image pixels: (keep_start, keep_end, crop_start,
    crop_end) each; the kept ranges, `side` long (the last one shorter), cover [0, length)
    once, in order, and each crop is its kept range widened by halo_pixels inside the axis."""
    return [(start, min(start + side, length), max(0, start - halo_pixels),
             min(length, start + side + halo_pixels)) for start in range(0, length, side)]


def stage_tiles(stage, height, width, tile):
    """The (row span, column span) pairs of a stage's tiles over a height x width image (both
    multiples of the stage's grid), base tile side `tile` (a multiple of ALIGN)."""
    if stage.tile == 0:
        return [((0, height, 0, height), (0, width, 0, width))]
    side, reach = tile * stage.tile, halo(stage)
    return [(rows, cols) for rows in spans(height, side, reach)
            for cols in spans(width, side, reach)]


def run_stages(stages, maps, run, tile, progress=None):
    """The output map of the last of stages, computed stage by stage in tiles.

    maps: {name: array [H, W, ...] or a PaddedImage} holding the first stage's inputs (H, W
    multiples of ALIGN).
    run(index, crops) -> the output of stages[index] for its input crops (arrays [h, w, ...]
    in the stages' input order, cut from the same region of the image), covering that region
    at the output's scale. tile: the base tile side in image pixels, a multiple of ALIGN.
    progress(done, total), when given, is called after each tile. A map no later stage reads
    is dropped from maps as soon as it has been read.
    """
    output = _Stitched(*_last_output_size(stages, maps))
    for _ in _run_stages(stages, maps, run, tile, progress, output.place):
        pass
    return output.map


def run_stages_in_bands(stages, maps, run, tile, progress=None):
    """run_stages' result one row of the last stage's tiles at a time, top to bottom: yields
    (first row, band [rows, W, ...]) as soon as the band's last tile has run, so that the last
    stage's whole map is never held (a large image's class probabilities, 4 bytes a class a
    pixel); nothing here holds a band once it has been given."""
    width = _last_output_size(stages, maps)[1]
    band = None

    def place(rows, cols, kept):
        nonlocal band
        if cols[0] == 0:
            band = np.empty((rows[1] - rows[0], width) + kept.shape[2:], kept.dtype)
        band[:, cols[0]:cols[1]] = kept

    for rows, cols in _run_stages(stages, maps, run, tile, progress, place):
        if cols[1] == width:
            given, band = band, None
            yield rows[0], given
            del given


def _image_size(stages, maps):
    """(height, width) in image pixels of the first stage's first input."""
    first, first_scale = stages[0].inputs[0]
    return tuple(side * first_scale for side in maps[first].shape[:2])


def _last_output_size(stages, maps):
    return tuple(side // stages[-1].output[1] for side in _image_size(stages, maps))


class _Stitched:
    """A map [height, width, ...] filled tile by tile (place); its dtype and channels are the
    first tile's."""

    def __init__(self, height, width):
        self.size, self.map = (height, width), None

    def place(self, rows, cols, kept):
        if self.map is None:
            self.map = aligned_empty(self.size + kept.shape[2:], kept.dtype)
        self.map[rows[0]:rows[1], cols[0]:cols[1]] = kept


def _run_stages(stages, maps, run, tile, progress, place):
    """Runs every stage but the last into maps, then the last one tile at a time, row by row:
    place(rows, columns, the output kept) with each as (start, end) at the output's scale, and
    yields (rows, columns) once the tile's output is placed and let go. A map no later stage
    reads is dropped as soon as it has been read; the last stage's own inputs once it has
    run."""
    height, width = _image_size(stages, maps)
    plan = [stage_tiles(stage, height, width, tile) for stage in stages]
    total, done = sum(len(tiles) for tiles in plan), 0

    def tiles_run(index, place_tile):
        nonlocal done
        stage, scale = stages[index], stages[index].output[1]
        for (keep_y0, keep_y1, crop_y0, crop_y1), (keep_x0, keep_x1, crop_x0, crop_x1) in \
                plan[index]:
            crops = [maps[source][crop_y0 // s:crop_y1 // s, crop_x0 // s:crop_x1 // s]
                     for source, s in stage.inputs]
            result = np.asarray(run(index, crops))
            rows, cols = (keep_y0 // scale, keep_y1 // scale), (keep_x0 // scale, keep_x1 // scale)
            offset_y, offset_x = (keep_y0 - crop_y0) // scale, (keep_x0 - crop_x0) // scale
            place_tile(rows, cols, result[offset_y:offset_y + rows[1] - rows[0],
                                          offset_x:offset_x + cols[1] - cols[0]])
            del crops, result  # not held while the next tile runs
            done += 1
            if progress is not None:
                progress(done, total)
            yield rows, cols

    for index, stage in enumerate(stages[:-1]):
        name, scale = stage.output
        output = _Stitched(height // scale, width // scale)
        for _ in tiles_run(index, output.place):
            pass
        maps[name] = output.map
        still_read = {source for later in stages[index + 1:] for source, _ in later.inputs}
        for source in list(maps):
            if source not in still_read:
                del maps[source]
    yield from tiles_run(len(stages) - 1, place)
    for source, _ in stages[-1].inputs:
        maps.pop(source, None)


def downscaled_size(height, width, max_size):
    """(h, w) with the longer side at most max_size and the aspect ratio kept (rounded, at least
    1 pixel); the size itself when it fits or max_size is 0."""
    longest = max(height, width)
    if max_size == 0 or longest <= max_size:
        return height, width
    scale = max_size / float(longest)
    return (min(max_size, max(1, int(round(height * scale)))),
            min(max_size, max(1, int(round(width * scale)))))

"""The networks as the stages predict runs a large image through, each in tiles that carry the
halo that stage needs (tiles.run_stages): labels equal to one pass of the whole network over the
whole image, in memory bounded by the tiles, at nearly the compute of that one pass.

The stages are network.py's own pieces (VGG's blocks, then network.Stages), built on
placeholders in the graph of a network.Model that predicts, sharing its variables: one
checkpoint restore serves both, and the graph is built once, whatever the images' sizes.
"""
import collections

import numpy as np
import tensorflow.compat.v1 as tf

import TensorflowUtils as utils
import network
from tiles import StageGeometry, run_stages, run_stages_in_bands

# How far each stage sees, in image pixels: 3x3 convolutions reach one pixel of their map on
# each side, fc6 three (7x7), a transposed convolution of stride 2 or 8 one pixel of its input.
# pool5's reach is the paper's (conv5_1 to conv5_4); the reference's (to conv5_3) is 48.
# The base tile side is --tile_size; the deeper stages' tiles hold fewer pixels and more
# channels, and take larger sides for about the same memory and a smaller share of halo. The
# fuses run whole: TensorFlow's transposed convolutions on a tile differ from theirs on the
# whole map in the last bits (its convolutions do not), and ties would then break otherwise.
GEOMETRY = (
    StageGeometry("blocks 1-2", (("image", 1),), ("pool2", 4), reach=6, grid=4, tile=1),
    StageGeometry("block 3", (("pool2", 4),), ("pool3", 8), reach=16, grid=8, tile=2),
    StageGeometry("block 4", (("pool3", 8),), ("pool4", 16), reach=32, grid=16, tile=2),
    StageGeometry("block 5", (("pool4", 16),), ("pool5", 32), reach=64, grid=32, tile=4),
    StageGeometry("scores", (("pool5", 32),), ("scores", 32), reach=96, grid=32, tile=2),
    StageGeometry("fuses", (("scores", 32), ("pool4", 16), ("pool3", 8)), ("fuse", 8),
                  reach=48, grid=32, tile=0),
    StageGeometry("upsample", (("fuse", 8),), ("labels", 1), reach=8, grid=8, tile=1),
)

Stage = collections.namedtuple("Stage", "geometry inputs output")


class TiledNetwork:
    """The stages of a variant's network in the current graph, on the variables of the
    network.Model built in it (weights from a checkpoint)."""

    def __init__(self, mean_pixel, variant, precision, num_classes, widths):
        self.num_classes = num_classes
        stages = network.STAGES[variant]
        dtype = network.COMPUTE_DTYPES[precision]

        def placeholder(name, channels, kind=dtype):
            return tf.placeholder(kind, [None, None, None, channels], name=name)

        blocks = widths.blocks
        built = []
        with tf.variable_scope(stages.scope, reuse=tf.AUTO_REUSE), tf.name_scope("tiles"):
            image = placeholder("image", 3, tf.float32)
            processed = tf.cast(utils.process_image(image, mean_pixel.astype(np.float32)), dtype)
            built.append(([image], network.vgg_blocks(None, processed, (1, 2), pool=stages.pool,
                                                      widths=widths)["pool2"]))
            for block, channels in ((3, blocks[1]), (4, blocks[2])):
                x = placeholder("pool%d" % (block - 1), channels)
                built.append(([x], network.vgg_blocks(None, x, (block,), pool=stages.pool,
                                                      widths=widths)["pool%d" % block]))
            pool4 = placeholder("pool4", blocks[3])
            built.append(([pool4], stages.pool5(pool4, None, False, widths)))
            pool5 = placeholder("pool5", blocks[4])
            built.append(([pool5], stages.scores(pool5, None, None, num_classes, False,
                                                 widths)))
            scores, pool4, pool3 = (placeholder("scores", num_classes),
                                    placeholder("skip4", blocks[3]),
                                    placeholder("skip3", blocks[2]))
            built.append(([scores, pool4, pool3],
                          stages.fuses(scores, pool4, pool3, num_classes, widths)))
            fuse = placeholder("fuse", num_classes if variant == network.PAPER else blocks[2])
            outputs = stages.upsample(fuse, num_classes, widths)
            built.append(([fuse], tf.cast(outputs.prediction, tf.uint8)))
            # The last stage's other output: each pixel's class probabilities (multi_scale.py).
            self.probabilities_output = tf.nn.softmax(outputs.logits)
        self.stages = [Stage(geometry, inputs, output)
                       for geometry, (inputs, output) in zip(GEOMETRY, built)]

    def labels(self, sess, image, tile, progress=None):
        """The uint8 labels [H, W] of image float32 [H, W, 3] (H, W multiples of 32, padded
        with the mean pixel; or a tiles.PaddedImage), stage by stage in tiles of base side
        `tile`; progress(done, total) after each tile."""
        return run_stages(GEOMETRY, {"image": image}, self._runner(sess, False), tile, progress)

    def probability_bands(self, sess, image, tile, progress=None):
        """The float32 class probabilities [H, W, classes] of image, as labels() runs it, one
        band of rows at a time: yields (first row, band [rows, W, classes]) top to bottom."""
        return run_stages_in_bands(GEOMETRY, {"image": image}, self._runner(sess, True), tile,
                                   progress)

    def _runner(self, sess, probabilities):
        last = len(self.stages) - 1

        def run(index, crops):
            stage = self.stages[index]
            output = (self.probabilities_output if probabilities and index == last
                      else stage.output)
            out = sess.run(output, {placeholder: crop[None]
                                    for placeholder, crop in zip(stage.inputs, crops)})
            return out[0, :, :, 0] if index == last and not probabilities else out[0]

        return run

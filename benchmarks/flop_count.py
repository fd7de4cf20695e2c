"""The analytic FLOP count of FCN-8s that benchmarks/bench.py divides its timings by: the
reference's network layer by layer, padding included, so that figures stay comparable with the
original implementation's and with earlier rounds (pure; tests/test_bench.py checks it against
a hand count)."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # FCN.py and friends are flat top-level modules

from datasets import ADE20K  # noqa: E402

NUM_CLASSES = ADE20K.num_classes  # the reference's network, whose FLOPs are counted


def _halve(size, times):
    """The side after `times` 2x2 stride-2 SAME pools: each rounds up."""
    for _ in range(times):
        size = -(-size // 2)
    return size


def fcn8s_conv_layers(h, w):
    """The convolutions of FCN-8s on an h x w image, in order, as
    (name, out_height, out_width, dense_kernel_side, cin, cout).

    The VGG convolutions after network.HEAD_INPUT (conv5_4) are left out: they feed nothing and are
    pruned. A transposed convolution of kernel k and stride s does (k/s)^2 multiply-adds per
    output pixel per channel pair (each output sees k/s input pixels per axis), so it is listed
    as a dense convolution of side k/s at its output resolution.
    """
    import network
    from vgg_weights import conv_layers
    layers = []
    for pools, convs in enumerate(conv_layers()):
        for name, cin, cout in convs:
            layers.append((name, _halve(h, pools), _halve(w, pools), 3, cin, cout))
            if name == network.HEAD_INPUT:
                break
    h32, w32 = _halve(h, 5), _halve(w, 5)
    layers += [("fc6", h32, w32, 7, 512, 4096),
               ("fc7", h32, w32, 1, 4096, 4096),
               ("fc8", h32, w32, 1, 4096, NUM_CLASSES),
               # Transposed: kernel 4 stride 2 -> side 2; kernel 16 stride 8 -> side 2.
               ("conv_t1", _halve(h, 4), _halve(w, 4), 4 // 2, NUM_CLASSES, 512),
               ("conv_t2", _halve(h, 3), _halve(w, 3), 4 // 2, 512, 256),
               ("conv_t3", h, w, 16 // 8, 256, NUM_CLASSES)]
    return layers


def conv_gflop(out_h, out_w, k, cin, cout):
    """2 * H * W * k * k * cin * cout: one multiply and one add per weight per output pixel."""
    return 2.0 * out_h * out_w * k * k * cin * cout / 1e9


def fcn8s_gflop_by_layer(h, w):
    """{layer name: forward GFLOP} for one h x w image."""
    return {name: conv_gflop(oh, ow, k, cin, cout)
            for name, oh, ow, k, cin, cout in fcn8s_conv_layers(h, w)}


def fcn8s_forward_gflop(h, w):
    """Forward GFLOP of FCN-8s's convolutions for one h x w image (about 66.3 at 224x224)."""
    return sum(fcn8s_gflop_by_layer(h, w).values())


# A training step is taken as 3x the forward: the backward pass computes, per convolution, the
# gradient of its input and of its kernel, each as much work as the forward.
TRAIN_FLOP_FACTOR = 3.0

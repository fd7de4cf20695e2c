"""Writes a synthetic imagenet-vgg-verydeep-19.mat in MatConvNet's layout, for tests and the demo.

The real file (about 0.5 GB) cannot be downloaded here. This one has the same structure: 43 layers
in VGG-19's order, each a MATLAB struct; the 16 convolutions have their real kernel shapes, stored
as MatConvNet does ([width, height, in, out], bias [out, 1]), with He-scaled random weights from a
fixed seed. fc6, fc7 and fc8 hold small stand-ins, which the reference network never reads; with
fc_weights (vgg19_fc_weights: the real shapes 7x7x512x4096 and 1x1x4096x4096, which
--variant=paper loads, sparse) the file is written compressed. Real-shaped fc layers are 475 MB
once loaded however they are stored, so the reference's fixtures keep the stand-ins
(docs/testing.md has the figures). Two layouts:
- 'beta16': top-level layers, classes, normalization (averageImage a full 224x224x3 image);
- 'meta':   top-level layers and meta, the normalization under meta (averageImage 1x1x3).
"""
import numpy as np
import scipy.io

from vgg_weights import VGG19_WIDTHS, WIDTHS_VARIABLE, Widths, conv_layers, fc_shapes

# The tests' narrow VGG-19: the same 16 convolutions, names and pools at an eighth of VGG-19's
# channels, fc6 and fc7 at 64 outputs instead of 4096 (about 2 M parameters, not 140 M).
NARROW = Widths(blocks=(8, 16, 32, 64, 64), fc=64)
MEAN_PIXEL = np.array([123.68, 116.779, 103.939])
FC_DENSITY = 1.0 / 128  # the share of fc6's and fc7's weights that are not zero


def _cell(*items):
    """A 1xN MATLAB cell array."""
    cell = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        cell[0, i] = item
    return cell


def _conv_struct(name, kernel_whio, bias, pad=1):
    # 'weights' first: the reference reads a conv layer's first field as its weights.
    return {"weights": _cell(kernel_whio.astype(np.float32),
                             bias.reshape(-1, 1).astype(np.float32)),
            "pad": np.array([[pad, pad, pad, pad]], dtype=np.float64),
            "type": "conv", "name": name,
            "stride": np.array([[1, 1]], dtype=np.float64)}


def vgg19_kernels(seed=0, scale=1.0, widths=VGG19_WIDTHS):
    """The 16 convolutions as {name: (kernel [h,w,in,out], bias [out])}, He-scaled, float32,
    of the given widths (VGG-19's by default).

    These are in TensorFlow's layout; write_vgg19_mat stores them as MatConvNet does.
    """
    rng = np.random.RandomState(seed)
    kernels = {}
    for block in conv_layers(widths):
        for name, cin, cout in block:
            std = scale * np.sqrt(2.0 / (9 * cin))
            kernel = (rng.standard_normal((3, 3, cin, cout)) * std).astype(np.float32)
            bias = (rng.standard_normal(cout) * 0.01).astype(np.float32)
            kernels[name] = (kernel, bias)
    return kernels


def vgg19_fc_weights(seed=0, density=FC_DENSITY, widths=VGG19_WIDTHS):
    """fc6 and fc7 as {name: (kernel [h,w,in,out], bias [out])}, float32, of their shapes at
    the given widths (the real ones by default): density of the weights (at random places, a
    few twice) He-scaled for that many inputs, the others zero. TensorFlow's layout;
    write_vgg19_mat stores them as MatConvNet does."""
    rng = np.random.RandomState(seed + 1000)  # not the convolutions' stream
    weights = {}
    for name, shape in fc_shapes(widths):
        kernel = np.zeros(shape, np.float32)
        count = int(kernel.size * density)
        std = np.sqrt(2.0 / (np.prod(shape[:3]) * density))
        kernel.reshape(-1)[rng.randint(0, kernel.size, count)] = rng.standard_normal(count) * std
        weights[name] = (kernel, (rng.standard_normal(shape[3]) * 0.01).astype(np.float32))
    return weights


def layer_structs(kernels, fc_weights=None):
    """The 43 layer structs of VGG-19 in order (conv, relu, a pool after each block, fc6-fc8,
    prob), from TF-layout kernels; fc6 and fc7 from fc_weights (TF layout), or small stand-ins
    when None."""
    layers = []
    for block_number, block in enumerate(conv_layers(), 1):
        for name, _, _ in block:
            kernel, bias = kernels[name]
            # MatConvNet's layout is [width, height, in, out]: swap the first two axes.
            layers.append(_conv_struct(name, np.transpose(kernel, (1, 0, 2, 3)), bias))
            layers.append({"name": "relu" + name[4:], "type": "relu"})
        layers.append({"name": "pool%d" % block_number, "type": "pool", "method": "max",
                       "pool": np.array([[2, 2]], dtype=np.float64),
                       "stride": np.array([[2, 2]], dtype=np.float64),
                       "pad": np.array([[0, 0, 0, 0]], dtype=np.float64)})
    small = np.random.RandomState(1)
    for name, shape in (("fc6", (1, 1, 2, 2)), ("fc7", (1, 1, 2, 2)), ("fc8", (1, 1, 2, 2))):
        kernel, bias = small.standard_normal(shape), np.zeros(shape[3])
        if fc_weights is not None and name in fc_weights:
            kernel, bias = fc_weights[name]
            kernel = np.transpose(kernel, (1, 0, 2, 3))  # MatConvNet's [width, height, in, out]
        layers.append(_conv_struct(name, kernel, bias, pad=0))
        if name != "fc8":
            layers.append({"name": "relu" + name[2:], "type": "relu"})
    layers.append({"name": "prob", "type": "softmax"})
    assert len(layers) == 43, len(layers)
    return layers


def write_conv_layers_mat(path, shapes):
    """A cheap MatConvNet-style .mat holding only the conv layers {name: TF kernel shape}, with
    zero weights and a mean pixel of ones: a stand-in for files that are not VGG-19."""
    layers = [_conv_struct(name, np.zeros(shape, np.float32), np.zeros(shape[3]))
              for name, shape in shapes.items()]
    scipy.io.savemat(path, {"layers": _cell(*layers),
                            "normalization": {"averageImage": np.ones((1, 1, 3))}})
    return path


def average_image(layout):
    if layout == "beta16":
        # A full 224x224x3 image whose mean over height and width is exactly MEAN_PIXEL: the mean
        # plus a checkerboard of +-5 that cancels out.
        checker = np.indices((224, 224)).sum(axis=0) % 2 * 10.0 - 5.0
        return (MEAN_PIXEL[None, None, :] + checker[:, :, None]).astype(np.float32)
    return MEAN_PIXEL.reshape(1, 1, 3).astype(np.float32)


def write_vgg19_mat(path, layout="beta16", seed=0, kernels=None, layers=None, fc_weights=None,
                    compress=None, widths=VGG19_WIDTHS):
    """Writes the synthetic .mat to path; returns the TF-layout kernels it holds.
    fc_weights: fc6 and fc7 (TF layout) instead of the small stand-ins, when layers are not
    given. compress: whether the file is compressed; None: when fc_weights are given (they are
    mostly zeros). widths: other than VGG-19's, the file declares them (fcn_widths)."""
    kernels = vgg19_kernels(seed, widths=widths) if kernels is None else kernels
    layers = layer_structs(kernels, fc_weights) if layers is None else layers
    layer_cell = _cell(*layers)
    normalization = {"averageImage": average_image(layout), "keepAspect": 1.0,
                     "border": np.array([[32, 32]], dtype=np.float64),
                     "imageSize": np.array([[224, 224, 3]], dtype=np.float64),
                     "interpolation": "bilinear"}
    classes = {"name": _cell("n01440764", "n01443537"), "description": _cell("tench", "goldfish")}
    if layout == "beta16":
        content = {"layers": layer_cell, "classes": classes, "normalization": normalization}
    elif layout == "meta":
        content = {"layers": layer_cell,
                   "meta": {"inputs": {"name": "data"}, "classes": classes,
                            "normalization": normalization}}
    else:
        raise ValueError("layout is 'beta16' or 'meta', not %r" % layout)
    if widths != VGG19_WIDTHS:
        content[WIDTHS_VARIABLE] = np.array([list(widths.blocks) + [widths.fc]], np.float64)
    compress = fc_weights is not None if compress is None else compress
    scipy.io.savemat(path, content, do_compression=compress)
    return kernels

"""VGG-19 from MatConvNet's .mat: the layer table, the download, reading and checking the weights.

Layers are found by their name field, not their position, and every kernel's shape is checked
against the table: a file that is not VGG-19 is one line (FCNError) naming what is wrong. Kernels
come out in TensorFlow's layout, float32. No TensorFlow here.

Widths: MatConvNet's files are VGG-19 at its published widths (VGG19_WIDTHS). A .mat may declare
other widths in a top-level variable `fcn_widths` (the channels of blocks 1 to 5, then fc6's and
fc7's outputs), as the tests' narrow VGG-19 does; its layers are then checked against those.
"""
import collections
import os

import numpy as np
import scipy.io

from downloads import check_file_in_place, download_first, remove_download, sources_from, \
    url_file_name
from guards import FCNError

# The channels of VGG's five blocks, and fc6's and fc7's outputs.
Widths = collections.namedtuple("Widths", "blocks fc")
VGG19_WIDTHS = Widths(blocks=(64, 128, 256, 512, 512), fc=4096)
# The convolutions of each block, by name, all 3x3; a 2x2 pool follows each block.
VGG19_BLOCK_LAYERS = (("conv1_1", "conv1_2"), ("conv2_1", "conv2_2"),
                      ("conv3_1", "conv3_2", "conv3_3", "conv3_4"),
                      ("conv4_1", "conv4_2", "conv4_3", "conv4_4"),
                      ("conv5_1", "conv5_2", "conv5_3", "conv5_4"))
WIDTHS_VARIABLE = "fcn_widths"
VGG19_FILE_NAME = "imagenet-vgg-verydeep-19.mat"
USE_VGG19 = "use " + VGG19_FILE_NAME  # what the errors about a wrong .mat advise
MODEL_URL = "http://www.vlfeat.org/matconvnet/models/beta16/" + VGG19_FILE_NAME
# Where VGG-19 comes from, {url: published MD5}, in the order tried: the reference's beta16 file,
# then MatConvNet's newer one (the 'layers'/'meta' layout, which load_vgg19 reads too), saved
# under the same name when the first fails.
VGG19_DOWNLOADS = {
    MODEL_URL: "8ee3263992981a1d26e73b3ca028a123",
    "https://www.vlfeat.org/matconvnet/models/" + VGG19_FILE_NAME:
        "106118b7cf60435e6d8e04f6a6dc3657",
}
# VGG-19's mean pixel (RGB) as MatConvNet publishes it; used when a checkpoint supplies every
# weight and the .mat is not at hand.
VGG19_MEAN_PIXEL = np.array([123.68, 116.779, 103.939])


def conv_layers(widths=VGG19_WIDTHS):
    """VGG-19's 16 convolutions block by block: ((name, in channels, out channels), ...) per
    block."""
    blocks, channels_in = [], 3
    for names, channels_out in zip(VGG19_BLOCK_LAYERS, widths.blocks):
        block = []
        for name in names:
            block.append((name, channels_in, channels_out))
            channels_in = channels_out
        blocks.append(tuple(block))
    return tuple(blocks)


def conv_shapes(widths=VGG19_WIDTHS):
    """(name, TensorFlow kernel shape [height, width, in, out]) of the 16 convolutions, in order."""
    return tuple((name, (3, 3, cin, cout)) for block in conv_layers(widths)
                 for name, cin, cout in block)


def fc_shapes(widths=VGG19_WIDTHS):
    """VGG-19's fully connected layers, which MatConvNet stores as convolutions over pool5 (7x7)
    and over fc6's outputs: (name, TensorFlow kernel shape). Only --variant=paper reads them."""
    return (("fc6", (7, 7, widths.blocks[-1], widths.fc)), ("fc7", (1, 1, widths.fc, widths.fc)))


VGG19_CONV_SHAPES = conv_shapes()
VGG19_FC_SHAPES = fc_shapes()


# ---- the file ----------------------------------------------------------------------------------

def get_model_data(dir_path, model_url=MODEL_URL, timeout=60, checksums=VGG19_DOWNLOADS):
    """The MatConvNet .mat at model_url as loaded by scipy.io.loadmat, downloaded into dir_path
    first when it is not there (the reference's name and behaviour).

    checksums ({url: md5}) gives model_url's MD5 and the URLs tried after it when its download
    fails or does not match; a URL it does not list is downloaded unchecked. A file already there
    is used, with a warning if it matches none of those MD5s.
    """
    if not os.path.isdir(dir_path):
        try:
            os.makedirs(dir_path, exist_ok=True)
        except OSError as e:
            raise FCNError("--model_dir %s does not exist and cannot be created (%s); "
                           "pass a writable folder" % (dir_path, e.strerror))
    sources = sources_from(model_url, checksums)
    path = os.path.join(dir_path, url_file_name(model_url))
    if os.path.exists(path):
        check_file_in_place(path, [md5 for _, md5 in sources], model_url)
        return load_mat(path)
    url = download_first(sources, path, timeout=timeout)
    # A download complete by its size can still be no .mat when no MD5 is known (a server's HTML
    # page, a file cut short at the source): removed, the next run downloads again instead of
    # failing on it for ever. A file that was there before is the user's, and only named.
    try:
        return load_mat(path, hint="it was just downloaded from %s and is removed: run again, or "
                                   "put %s there by hand" % (url, VGG19_FILE_NAME))
    except FCNError:
        remove_download(path)
        raise


def load_mat(path, variable_names=None, hint=None):
    """scipy.io.loadmat with the one-line error this project promises for a file that is not one.
    variable_names: read only these top-level variables (the rest of the file is skipped);
    hint: what the error tells the user to do (by default, delete the file)."""
    try:
        # struct_as_record=False gives objects with attributes; fields are looked up by name.
        return scipy.io.loadmat(path, struct_as_record=False, squeeze_me=False,
                                variable_names=variable_names)
    except Exception as e:  # scipy raises ValueError, MatReadError, TypeError... for a bad file
        hint = hint or ("delete it so that it is downloaded again, or put %s there by hand"
                        % VGG19_FILE_NAME)
        raise FCNError("%s cannot be read as a MATLAB .mat (%s: %s); %s"
                       % (path, type(e).__name__, str(e).splitlines()[0] if str(e) else "", hint))


def _unwrap(value):
    """Strips the 1x1 object/cell arrays that loadmat wraps around every struct field and cell."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.reshape(-1)[0]
    return value


def _field(struct, name):
    value = getattr(struct, name, None)
    return None if value is None else _unwrap(value)


def _string(value):
    value = _unwrap(value)
    if isinstance(value, np.ndarray):
        value = "".join(value.reshape(-1).tolist()) if value.size else ""
    return str(value)


def matconvnet_kernel_to_tf(kernel):
    """MatConvNet stores a kernel as [width, height, in, out]; TensorFlow wants
    [height, width, in, out]. The reference swaps the first two axes; so does this port."""
    return np.transpose(np.asarray(kernel), (1, 0, 2, 3))


def mean_pixel_from_average_image(average_image):
    """The per-channel mean pixel (RGB) from MatConvNet's normalization.averageImage, which is a
    full 224x224x3 image in the beta16 file and a 1x1x3 (or plain 3) vector in newer ones."""
    average_image = np.asarray(average_image, dtype=np.float64)
    if average_image.size == 3:
        return average_image.reshape(3)
    if average_image.ndim == 3 and average_image.shape[2] == 3:
        return average_image.mean(axis=(0, 1))
    raise ValueError("averageImage has shape %s, expected HxWx3 or 3 values"
                     % (average_image.shape,))


def declared_widths(mat, path="the .mat"):
    """The Widths a loaded .mat declares in fcn_widths, or VGG19_WIDTHS when it declares none
    (every MatConvNet file)."""
    if WIDTHS_VARIABLE not in mat:
        return VGG19_WIDTHS
    values = np.asarray(mat[WIDTHS_VARIABLE]).reshape(-1)
    if values.size != 6 or not np.all(values >= 1) or not np.all(values == np.round(values)):
        raise FCNError("%s declares %s = %s, not six positive widths (blocks 1-5, fc); %s"
                       % (path, WIDTHS_VARIABLE, values.tolist(), USE_VGG19))
    values = [int(v) for v in values]
    return Widths(blocks=tuple(values[:5]), fc=values[5])


def _layers_by_name(mat, path):
    if "layers" not in mat:
        raise FCNError("%s is not a MatConvNet model (no 'layers' in it); delete it and run again "
                       "to download %s" % (path, VGG19_FILE_NAME))
    layers = {}
    for entry in np.asarray(mat["layers"]).reshape(-1):
        layer = _unwrap(entry)
        name = _field(layer, "name")
        if name is not None:
            layers[_string(name)] = layer
    return layers


def _normalization(mat):
    """beta16 keeps 'normalization' at the top level; newer files keep it under 'meta'."""
    if "normalization" in mat:
        return _unwrap(mat["normalization"])
    if "meta" in mat:
        return _field(_unwrap(mat["meta"]), "normalization")
    return None


def _kernel_and_bias(layers, name, tf_shape, path):
    """Layer name's (kernel [h,w,in,out], bias [out]) in float32, its shape checked against
    tf_shape; one line printed. FCNError naming what is wrong for a file that is not VGG-19."""
    layer = layers.get(name)
    if layer is None:
        raise FCNError("%s is not VGG-19: it has no layer %s (is it VGG-16 or another model?); "
                       "%s" % (path, name, USE_VGG19))
    params = getattr(layer, "weights", None)
    params = [] if params is None else np.asarray(params, dtype=object).reshape(-1)
    if len(params) != 2:
        raise FCNError("%s is not VGG-19: layer %s has %d weight arrays, expected a kernel and "
                       "a bias; %s" % (path, name, len(params), USE_VGG19))
    kernel, bias = np.asarray(params[0]), np.asarray(params[1])
    # MatConvNet's [width, height, in, out] of a square kernel has the same shape as TF's.
    if kernel.shape != tf_shape or bias.size != tf_shape[3]:
        raise FCNError("%s is not VGG-19: layer %s has kernel %s and bias %s, expected %s and "
                       "(%d,); %s" % (path, name, kernel.shape, bias.shape, tf_shape,
                                      tf_shape[3], USE_VGG19))
    print("Loaded %-8s kernel %-18s bias %s" % (name, tf_shape, (tf_shape[3],)))
    return (matconvnet_kernel_to_tf(kernel).astype(np.float32),
            bias.reshape(-1).astype(np.float32))


def load_vgg19(mat, path="the .mat"):
    """VGG-19's 16 convolutions and the mean pixel out of a loaded MatConvNet .mat: (weights,
    mean_pixel), weights mapping 'conv1_1'... to (kernel [h,w,in,out], bias [out]), float32,
    every shape checked against the file's widths (declared_widths)."""
    layers = _layers_by_name(mat, path)
    weights = {name: _kernel_and_bias(layers, name, tf_shape, path)
               for name, tf_shape in conv_shapes(declared_widths(mat, path))}
    mean_pixel = mean_pixel_of(mat, path)
    if mean_pixel is None:
        raise FCNError("%s has no normalization.averageImage, so the mean pixel is unknown; %s"
                       % (path, USE_VGG19))
    print("Mean pixel (RGB): %s" % np.array2string(mean_pixel, precision=3))
    return weights, mean_pixel


def load_vgg19_fc(mat, path="the .mat"):
    """VGG-19's fc6 and fc7 from a loaded MatConvNet .mat, as load_vgg19 reads the convolutions:
    {'fc6': (kernel [7,7,512,4096], bias), 'fc7': (kernel [1,1,4096,4096], bias)} at VGG-19's
    widths, transposed from MatConvNet's [width, height, in, out] and shape-checked, one line
    printed each."""
    layers = _layers_by_name(mat, path)
    return {name: _kernel_and_bias(layers, name, tf_shape, path)
            for name, tf_shape in fc_shapes(declared_widths(mat, path))}


def mean_pixel_of(mat, path="the .mat"):
    """The mean pixel (RGB) of a loaded MatConvNet .mat, or None when it holds no averageImage."""
    normalization = _normalization(mat)
    average_image = None if normalization is None else _field(normalization, "averageImage")
    if average_image is None:
        return None
    try:
        return mean_pixel_from_average_image(average_image)
    except ValueError as e:
        raise FCNError("%s: %s; %s" % (path, e, USE_VGG19))


def read_mean_pixel(path):
    """The mean pixel of the .mat at path, reading only its normalization (not the 0.5 GB of
    weights); None when the file holds none."""
    return mean_pixel_of(load_mat(path, variable_names=("normalization", "meta")), path)


def file_widths(model_dir):
    """The Widths of the .mat in model_dir, reading only its fcn_widths (not its weights);
    VGG-19's when it declares none, is not there yet or cannot be read (loading it says why)."""
    path = os.path.join(model_dir, VGG19_FILE_NAME)
    try:
        return declared_widths(load_mat(path, variable_names=(WIDTHS_VARIABLE,)), path)
    except FCNError:
        return VGG19_WIDTHS


# ---- what the network is built from ------------------------------------------------------------

def load_vgg(model_dir, with_fc=False):
    """(weights, mean_pixel, widths) of the VGG-19 in model_dir, downloaded there when absent;
    with_fc: the weights hold fc6 and fc7 too (the paper variant's)."""
    mat = get_model_data(model_dir, MODEL_URL)
    path = os.path.join(model_dir, VGG19_FILE_NAME)
    weights, mean_pixel = load_vgg19(mat, path)
    if with_fc:
        weights.update(load_vgg19_fc(mat, path))
    return weights, mean_pixel, declared_widths(mat, path)


def mean_pixel_for_restore(model_dir):
    """The mean pixel when a checkpoint supplies the weights: from the .mat when it is there
    (only its normalization is read), else VGG-19's published one."""
    path = os.path.join(model_dir, VGG19_FILE_NAME)
    mean_pixel = read_mean_pixel(path) if os.path.exists(path) else None
    return VGG19_MEAN_PIXEL if mean_pixel is None else mean_pixel

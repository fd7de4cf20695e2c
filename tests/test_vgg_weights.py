"""Loading VGG-19 from MatConvNet's .mat: layouts, the kernel transpose, shape checks, download."""
import functools
import http.server
import os
import threading

import numpy as np
import pytest
import scipy.io
import tensorflow.compat.v1 as tf

import FCN
import vgg_weights
from guards import FCNError
from tests.make_vgg_mat import (MEAN_PIXEL, NARROW, layer_structs, vgg19_kernels,
                                write_conv_layers_mat, write_vgg19_mat)


def numpy_conv_same_from_matconvnet(image, kernel_whio, bias):
    """Direct 3x3 'same' convolution (cross-correlation, as TF and MatConvNet compute it), reading
    the kernel the way MatConvNet stores it: kernel_whio[x, y, in, out] with x along the width."""
    h, w, _ = image.shape
    kw, kh = kernel_whio.shape[:2]
    padded = np.pad(image, ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = np.zeros((h, w, kernel_whio.shape[3]))
    for y in range(kh):
        for x in range(kw):
            window = padded[y:y + h, x:x + w, :].astype(np.float64)
            out += window @ kernel_whio[x, y].astype(np.float64)
    return out + bias.reshape(-1)


def test_conv1_1_reads_matconvnet_kernel_as_width_height(vgg_mat_paths, vgg):
    raw = scipy.io.loadmat(vgg_mat_paths["beta16"])
    # Straight out of the file, without the project's code: layer 0's first field is its weights.
    kernel_whio, bias = raw["layers"][0, 0][0, 0]["weights"][0]
    assert not np.allclose(kernel_whio, np.transpose(kernel_whio, (1, 0, 2, 3)))  # asymmetric

    image = np.random.RandomState(3).uniform(0, 255, (1, 9, 7, 3)).astype(np.float32)
    with tf.Graph().as_default():
        net = FCN.vgg_net(vgg[0], tf.constant(image), debug=False)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            got = sess.run(net["conv1_1"])[0]
    expected = numpy_conv_same_from_matconvnet(image[0], kernel_whio, bias)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-2)


def test_both_layouts_give_the_same_weights_and_mean_pixel(vgg_mat_paths):
    loaded = {}
    for layout, path in vgg_mat_paths.items():
        loaded[layout] = vgg_weights.load_vgg19(vgg_weights.load_mat(path), path)
    (w_beta, mean_beta), (w_meta, mean_meta) = loaded["beta16"], loaded["meta"]
    assert sorted(w_beta) == sorted(w_meta) == sorted(
        name for name, _ in vgg_weights.VGG19_CONV_SHAPES)
    for name in w_beta:
        np.testing.assert_array_equal(w_beta[name][0], w_meta[name][0])
        np.testing.assert_array_equal(w_beta[name][1], w_meta[name][1])
    np.testing.assert_allclose(mean_beta, MEAN_PIXEL, atol=1e-4)
    np.testing.assert_allclose(mean_meta, MEAN_PIXEL, atol=1e-4)


def test_weights_are_tf_layout_of_what_was_written(vgg):
    expected = vgg19_kernels(seed=0)  # the generator's TF-layout kernels, before it transposes
    for name, (kernel, bias) in expected.items():
        np.testing.assert_array_equal(vgg[0][name][0], kernel)
        np.testing.assert_array_equal(vgg[0][name][1], bias)
        assert vgg[0][name][0].dtype == np.float32


def test_layers_are_found_by_name_not_position(tmp_path):
    kernels = {name: (np.zeros(shape, np.float32), np.full(shape[3], i, np.float32))
               for i, (name, shape) in enumerate(vgg_weights.VGG19_CONV_SHAPES)}
    layers = layer_structs(kernels)
    layers.reverse()
    path = str(tmp_path / "reversed.mat")
    write_vgg19_mat(path, kernels=kernels, layers=layers)
    weights, _ = vgg_weights.load_vgg19(vgg_weights.load_mat(path), path)
    for i, (name, _) in enumerate(vgg_weights.VGG19_CONV_SHAPES):
        assert weights[name][1][0] == i


def test_mean_pixel_from_average_image_shapes():
    full = np.zeros((4, 4, 3))
    full[..., 0], full[0, 0, 1], full[..., 2] = 1.0, 16.0, 2.0
    np.testing.assert_allclose(vgg_weights.mean_pixel_from_average_image(full), [1.0, 1.0, 2.0])
    np.testing.assert_allclose(vgg_weights.mean_pixel_from_average_image([[[5, 6, 7]]]), [5, 6, 7])
    with pytest.raises(ValueError):
        vgg_weights.mean_pixel_from_average_image(np.zeros((4, 4)))


def test_a_vgg16_file_is_refused_naming_the_missing_layer(tmp_path):
    convs = dict(vgg_weights.VGG19_CONV_SHAPES[:7])  # VGG-16 has no conv3_4
    path = write_conv_layers_mat(str(tmp_path / "vgg16.mat"), convs)
    with pytest.raises(FCNError, match=r"not VGG-19: it has no layer conv3_4"):
        vgg_weights.load_vgg19(vgg_weights.load_mat(path), path)


def test_a_wrong_kernel_shape_is_refused_naming_the_layer(tmp_path):
    path = write_conv_layers_mat(str(tmp_path / "bad.mat"), {"conv1_1": (3, 3, 3, 32)})
    with pytest.raises(FCNError, match=r"layer conv1_1 has kernel \(3, 3, 3, 32\)"):
        vgg_weights.load_vgg19(vgg_weights.load_mat(path), path)


def test_a_file_that_is_not_a_mat_is_refused(tmp_path):
    path = tmp_path / "imagenet-vgg-verydeep-19.mat"
    path.write_text("<html>404 Not Found</html>")
    with pytest.raises(FCNError, match=r"cannot be read as a MATLAB \.mat.*delete it"):
        vgg_weights.load_mat(str(path))


def test_a_mat_without_layers_is_refused(tmp_path):
    path = str(tmp_path / "other.mat")
    scipy.io.savemat(path, {"x": np.ones(3)})
    with pytest.raises(FCNError, match=r"not a MatConvNet model \(no 'layers'"):
        vgg_weights.load_vgg19(vgg_weights.load_mat(path), path)


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests = 0

    def do_GET(self):
        type(self).requests += 1
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def mat_server(vgg_mat_paths):
    folder = os.path.dirname(vgg_mat_paths["beta16"])
    handler = functools.partial(_CountingHandler, directory=folder)
    _CountingHandler.requests = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d/" % server.server_address[1]
    server.shutdown()
    server.server_close()


def test_get_model_data_downloads_once_then_uses_the_file(tmp_path, mat_server, vgg_mat_paths):
    url = mat_server + os.path.basename(vgg_mat_paths["beta16"])
    model_dir = str(tmp_path / "Model_zoo")
    mat = vgg_weights.get_model_data(model_dir, url)
    weights, mean = vgg_weights.load_vgg19(mat)
    assert weights["conv5_4"][0].shape == (3, 3, 512, 512)
    assert _CountingHandler.requests == 1
    assert sorted(os.listdir(model_dir)) == [os.path.basename(url)]  # no .part left
    vgg_weights.get_model_data(model_dir, url)
    assert _CountingHandler.requests == 1


def test_a_download_error_names_the_url_and_leaves_nothing(tmp_path, mat_server):
    url = mat_server + "missing.mat"
    with pytest.raises(FCNError, match=r"missing\.mat failed: HTTP 404"):
        vgg_weights.get_model_data(str(tmp_path), url)
    assert os.listdir(str(tmp_path)) == []


# ---- other widths: the tests' narrow VGG-19 -----------------------------------------------------

def test_a_mat_declaring_its_widths_is_read_and_checked_at_them(tmp_path):
    path = str(tmp_path / "narrow.mat")
    written = write_vgg19_mat(path, widths=NARROW)
    mat = vgg_weights.load_mat(path)
    assert vgg_weights.declared_widths(mat, path) == NARROW
    weights, _ = vgg_weights.load_vgg19(mat, path)
    assert weights["conv1_1"][0].shape == (3, 3, 3, 8)
    assert weights["conv5_4"][0].shape == (3, 3, 64, 64)
    for name, (kernel, bias) in written.items():
        np.testing.assert_array_equal(weights[name][0], kernel)
        np.testing.assert_array_equal(weights[name][1], bias)
    # MatConvNet's files declare nothing: VGG-19's own widths.
    assert vgg_weights.declared_widths({}) == vgg_weights.VGG19_WIDTHS


def test_a_layer_that_does_not_fit_the_declared_widths_is_refused(tmp_path):
    kernels = vgg19_kernels(widths=NARROW)
    kernels["conv3_2"] = (np.zeros((3, 3, 32, 40), np.float32), np.zeros(40, np.float32))
    path = str(tmp_path / "odd.mat")
    write_vgg19_mat(path, kernels=kernels, widths=NARROW)
    with pytest.raises(FCNError, match=r"layer conv3_2 has kernel \(3, 3, 32, 40\) .*expected "
                                       r"\(3, 3, 32, 32\)"):
        vgg_weights.load_vgg19(vgg_weights.load_mat(path), path)


@pytest.mark.parametrize("declared", [[8, 16, 32, 64, 64], [8, 16, 32, 64, 0, 64],
                                      [8, 16, 32.5, 64, 64, 64]])
def test_a_declaration_that_is_not_six_widths_is_refused(tmp_path, declared):
    path = str(tmp_path / "declared.mat")
    scipy.io.savemat(path, {vgg_weights.WIDTHS_VARIABLE: np.array([declared], np.float64)})
    with pytest.raises(FCNError, match=r"declares fcn_widths = .*not six positive widths"):
        vgg_weights.declared_widths(vgg_weights.load_mat(path), path)

"""--precision=bf16: the same variables and checkpoints, logits close to fp32's."""
import numpy as np
import tensorflow.compat.v1 as tf

import FCN
import network


def _logits(vgg, precision, images, checkpoint=None, save_to=None):
    with tf.Graph().as_default():
        tf.set_random_seed(7)
        image, _, _ = network.input_placeholders()
        _, logits = FCN.inference(image, 1.0, vgg=vgg, debug=False, precision=precision)
        names = [(v.op.name, v.dtype.base_dtype, v.shape.as_list())
                 for v in tf.global_variables()]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            if checkpoint:
                tf.train.Saver().restore(sess, checkpoint)
            if save_to:
                tf.train.Saver().save(sess, save_to)
            return sess.run(logits, {image: images}), names


def test_bf16_keeps_float32_variables_and_gives_logits_within_5_percent(vgg, tmp_path):
    images = np.random.RandomState(0).uniform(0, 255, (2, 64, 96, 3))
    ckpt = str(tmp_path / "model.ckpt")
    fp32, fp32_vars = _logits(vgg, "fp32", images, save_to=ckpt)
    # The bf16 graph restores the fp32 checkpoint: the same variables, all float32.
    bf16, bf16_vars = _logits(vgg, "bf16", images, checkpoint=ckpt)
    assert bf16_vars == fp32_vars
    assert all(dtype == tf.float32 for _, dtype, _ in bf16_vars)
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
    relative = np.abs(bf16 - fp32).max() / np.abs(fp32).max()
    print("bf16 vs fp32 logits: max |diff| / max |fp32| = %.4f" % relative)
    assert 0 < relative < 0.05

"""A logs folder holding a checkpoint of the network at its initial weights and its classes.json:
what predict and export need of a model, without training one (for the runs whose cost or size,
not what the model learned, is what they measure)."""
import json
import os

import datasets


def write_initial_model(logs, vgg, classes, step=1, widths=None):
    """Writes <logs>/model.ckpt-<step> (the network's variables at their initial values for
    vgg = (weights, mean_pixel), no optimizer slots) and <logs>/classes.json; returns logs."""
    import tensorflow.compat.v1 as tf
    import network
    os.makedirs(logs, exist_ok=True)
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        model = network.Model(vgg, training=False, classes=classes, widths=widths)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver(model.saveable).save(sess, os.path.join(logs, "model.ckpt"),
                                                global_step=step, write_meta_graph=False)
    with open(os.path.join(logs, datasets.CLASSES_NAME), "w") as f:
        json.dump(datasets.info_to_json(classes), f)
    return logs

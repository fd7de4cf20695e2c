"""One training step of network.Model on one device and on 2 mirrored replicas, from the same
weights on the same global batch, and checkpoint round trips between them; run in a process of
its own by tests/test_distribute.py (the CPU is split into 2 devices for the session).

    python -m tests.distribute_step <model_dir> <work_dir> <result.json>

Adam's first-moment slot after one step is 0.1 x the gradient it was given, whatever the
gradient's scale (Adam's update itself hides a gradient twice too large), so the slots compare
the merged gradient of the replicas with one device's. result.json holds, per checked variable,
the largest relative difference of the slots and of the weights after the step, whether the two
replicas' copies are equal, and the largest differences after each checkpoint round trip.
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

import FCN  # noqa: E402
import checkpoints  # noqa: E402
import distribute  # noqa: E402
import network  # noqa: E402
import training_recipe  # noqa: E402
import vgg_weights  # noqa: E402

CHECKED = ["inference/conv1_1_w", "inference/conv4_2_b", "inference/W6", "inference/W8",
           "inference/W_t1", "inference/W_t3", "inference/b_t3"]
SIZE, BATCH = 64, 2


def the_batch():
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, size=(BATCH, SIZE, SIZE, 3)).astype(np.float32)
    annotations = rng.integers(0, 151, size=(BATCH, SIZE, SIZE, 1)).astype(np.int32)
    return images, annotations


# SGD with momentum, weight decay, class weights and the poly schedule: plain SGD shows a merged
# gradient off by the replica count, which Adam hides, and weight decay is added per replica.
RECIPE_RATE = 0.01
RECIPE = training_recipe.REFERENCE_RECIPE._replace(
    lr_schedule="poly", max_iterations=10, optimizer="sgd", momentum=0.9, weight_decay=5e-4,
    class_weights=list(np.linspace(0.5, 2.0, 151)))


def build(vgg, widths, strategy=None, recipe=training_recipe.REFERENCE_RECIPE,
          learning_rate=network.LEARNING_RATE):
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(0)
        model = network.Model(vgg, training=True, strategy=strategy, widths=widths,
                              recipe=recipe, learning_rate=learning_rate)
        by_name = {v.op.name: v for v in model.saveable}
        saver = tf.train.Saver(model.saveable)
    return graph, model, by_name, saver


def values(sess, by_name, names):
    return dict(zip(names, sess.run([by_name[n] for n in names])))


def largest_relative(a, b):
    return max(float(np.max(np.abs(a[n] - b[n])) / max(np.max(np.abs(b[n])), 1e-30)) for n in a)


def main(model_dir, work_dir, result_path):
    weights, mean_pixel, widths = vgg_weights.load_vgg(model_dir)
    vgg = (weights, mean_pixel)
    images, annotations = the_batch()
    slots = [n + "/Adam" for n in CHECKED]
    result = {}

    # One device.
    graph, model, by_name, saver = build(vgg, widths)
    with graph.as_default(), tf.Session(graph=graph) as sess:
        sess.run(tf.global_variables_initializer())
        start = saver.save(sess, os.path.join(work_dir, "start"), write_meta_graph=False)
        initial = values(sess, by_name, CHECKED)
        feed = {model.image: images, model.annotation: annotations, model.keep_probability: 1.0}
        one_loss = float(sess.run([model.train_op, model.loss], feed)[1])
        one = values(sess, by_name, CHECKED + slots)

    # Two replicas, from the same start (a single-device checkpoint restored under mirrored).
    settings = FCN.current_settings().replace(distribute="mirrored", devices="CPU:0,CPU:1",
                                              batch_size=BATCH)
    cluster = distribute.Cluster(tf, settings, gpu_count=0)
    graph, model, by_name, saver = build(vgg, widths, cluster.strategy)
    with graph.as_default(), tf.Session(graph=graph, config=cluster.config) as sess:
        sess.run(tf.global_variables_initializer())
        checkpoints.restore(sess, start, model.saveable, model.global_step)
        restored = values(sess, by_name, CHECKED)
        feed = {model.image: images, model.annotation: annotations, model.keep_probability: 1.0}
        two_loss = float(sess.run([model.train_op, model.loss], feed)[1])
        two = values(sess, by_name, CHECKED + slots)
        copies_equal = all(
            all(np.array_equal(c, copies[0]) for c in copies)
            for copies in (sess.run(list(by_name[n].values)) for n in CHECKED + slots))
        devices = sorted({c.device for n in CHECKED for c in by_name[n].values})
        mirrored = saver.save(sess, os.path.join(work_dir, "mirrored"), write_meta_graph=False)
        names_in_mirrored = sorted(n for n, _ in tf.train.list_variables(mirrored))

    # The mirrored checkpoint restored on one device.
    graph, model, by_name, saver = build(vgg, widths)
    with graph.as_default(), tf.Session(graph=graph) as sess:
        sess.run(tf.global_variables_initializer())
        checkpoints.restore(sess, mirrored, model.saveable, model.global_step)
        back = values(sess, by_name, CHECKED + slots)
        plain_names = sorted(v.op.name for v in model.saveable)

    # The recipe's step, from the same start, on one device and on the two replicas.
    updates = []
    for strategy in (None, cluster.strategy):
        graph, model, by_name, saver = build(vgg, widths, strategy, RECIPE, RECIPE_RATE)
        config = None if strategy is None else cluster.config
        with graph.as_default(), tf.Session(graph=graph, config=config) as sess:
            sess.run(tf.global_variables_initializer())
            checkpoints.restore(sess, start, model.saveable, model.global_step)
            before = values(sess, by_name, CHECKED)
            # One image twice: each replica's class-weighted mean is then normalised by the
            # same weights as the whole batch's (with different halves it would be by their own).
            feed = {model.image: images[[0, 0]], model.annotation: annotations[[0, 0]],
                    model.keep_probability: 1.0}
            sess.run(model.train_op, feed)
            after = values(sess, by_name, CHECKED)
            updates.append({n: after[n] - before[n] for n in CHECKED})
    result["recipe_update_difference"] = largest_relative(updates[1], updates[0])
    result["recipe_update_largest"] = min(float(np.max(np.abs(u))) for u in updates[0].values())

    result.update(
        losses=[one_loss, two_loss], devices=devices, copies_equal=copies_equal,
        slot_difference={n: largest_relative({n: two[n]}, {n: one[n]}) for n in slots},
        slot_largest={n: float(np.max(np.abs(one[n]))) for n in slots},
        weight_difference=largest_relative({n: two[n] for n in CHECKED},
                                           {n: one[n] for n in CHECKED}),
        moved={n: float(np.max(np.abs(one[n] - initial[n]))) for n in CHECKED},
        plain_to_mirrored=largest_relative(restored, initial),
        mirrored_to_plain=largest_relative(back, two),
        names_equal=names_in_mirrored == plain_names)
    with open(result_path, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:4])

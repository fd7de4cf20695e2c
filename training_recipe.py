"""How a run trains beyond the reference's Adam at a constant rate (docs/recipes.md): the Recipe
the settings give, the learning rate's schedule, the optimizer, weight decay, and which
optimizer a checkpoint's slots belong to. The losses stay with the network (network.py)."""
import collections

import tensorflow.compat.v1 as tf

import augment
from optimizers import OPTIMIZERS, slot_optimizer

# How a run trains (docs/recipes.md); REFERENCE_RECIPE is the reference's: Adam at a constant
# rate, the plain mean cross-entropy. pad_label: the label of augmentation's padding, which the
# loss then ignores too (None: no padding).
Recipe = collections.namedtuple("Recipe", [
    "lr_schedule", "warmup_steps", "max_iterations", "optimizer", "momentum", "weight_decay",
    "class_weights", "hard_pixel_fraction", "pad_label"])
REFERENCE_RECIPE = Recipe("constant", 0, None, "adam", 0.9, 0.0, None, 1.0, None)
POLY_POWER = 0.9  # the poly schedule's power (DeepLab's, mmsegmentation's, CSAIL's)


def checkpoint_optimizer(checkpoint):
    """The optimizer whose slots a checkpoint holds ('adam', 'sgd'), or None when it holds
    none."""
    found = {slot_optimizer(name) for name, _ in tf.train.list_variables(checkpoint)}
    return next((optimizer for optimizer in OPTIMIZERS if optimizer in found), None)


def constant_rate(recipe):
    """Whether the recipe keeps the learning rate constant, as the reference."""
    return recipe.lr_schedule == "constant" and not recipe.warmup_steps


def learning_rate_at(step, learning_rate, recipe):
    """The learning rate in force at step (a tensor, the updates made so far): learning_rate,
    times (1 - step / max_iterations) ** 0.9 for the poly schedule, times step / warmup_steps
    during the warmup."""
    step = tf.cast(step, tf.float32)
    rate = tf.constant(learning_rate, tf.float32)
    if recipe.lr_schedule == "poly":
        rate = rate * tf.pow(tf.maximum(1.0 - step / float(recipe.max_iterations), 0.0),
                             POLY_POWER)
    if recipe.warmup_steps:
        rate = rate * tf.minimum(step / float(recipe.warmup_steps), 1.0)
    return rate


def rate_in_force(learning_rate, recipe, step):
    """learning_rate itself when the recipe keeps it constant (the reference's graph), else its
    tensor at step."""
    if constant_rate(recipe):
        return learning_rate
    return learning_rate_at(step, learning_rate, recipe)


def decayed_weights(var_list):
    """The variables weight decay applies to: the layers' weights (rank 2 and more), not their
    biases."""
    return [var for var in var_list if var.shape.ndims >= 2]


def weight_decay_loss(var_list, weight_decay):
    """weight_decay / 2 times the sum of the squared weights of decayed_weights(var_list)."""
    return weight_decay / 2.0 * tf.add_n([tf.reduce_sum(tf.square(var))
                                          for var in decayed_weights(var_list)])


def with_weight_decay(loss, var_list, weight_decay):
    """loss, plus weight_decay_loss when weight_decay is not 0 (the reference's graph else)."""
    if not weight_decay:
        return loss
    return loss + weight_decay_loss(var_list, weight_decay)


def optimizer_of(recipe, learning_rate):
    """Adam (the reference's), or SGD with the recipe's momentum."""
    if recipe.optimizer == "sgd":
        return tf.train.MomentumOptimizer(learning_rate, recipe.momentum)
    return tf.train.AdamOptimizer(learning_rate)


def recipe_of(settings, classes, class_weights=None):
    """The Recipe the settings train with; class_weights: the list --class_weights gives."""
    pads = "scale" in augment.parse_parts(settings.augment)
    return Recipe(settings.lr_schedule, settings.warmup_steps, settings.max_iterations,
                  settings.optimizer, settings.momentum, settings.weight_decay,
                  None if class_weights is None else list(class_weights),
                  settings.hard_pixel_fraction,
                  augment.pad_label(classes.loss_ignore_label) if pads else None)

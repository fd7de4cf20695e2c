"""The optimizers --optimizer names (docs/recipes.md) and what each keeps beside every weight.
No TensorFlow here: the settings checks and the memory estimate read it before TensorFlow is
imported."""
import collections

# slot_name: the last part of the names of the optimizer's slots in a checkpoint (W/Adam and
# W/Adam_1); slots: how many it keeps per weight (Adam's m and v; sgd is SGD with momentum,
# whose accumulator TensorFlow keeps even at --momentum=0).
Optimizer = collections.namedtuple("Optimizer", "slot_name slots")
OPTIMIZERS = {"adam": Optimizer("Adam", 2), "sgd": Optimizer("Momentum", 1)}


def slot_optimizer(name):
    """The optimizer whose slot the checkpoint variable `name` is, or None for a weight."""
    last = name.rsplit("/", 1)[-1]
    for optimizer, kept in OPTIMIZERS.items():
        if last == kept.slot_name or last.startswith(kept.slot_name + "_"):
            return optimizer
    return None

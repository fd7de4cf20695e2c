"""The optimizers --optimizer names (docs/recipes.md) and what each keeps beside every weight.
No TensorFlow here: the settings checks and the memory estimate read it before TensorFlow is
imported."""
import collections

# slot_suffix: how a checkpoint's names of the optimizer's slots end; slots: how many it keeps
# per weight (Adam's m and v; sgd is SGD with momentum, whose accumulator TensorFlow keeps even
# at --momentum=0).
Optimizer = collections.namedtuple("Optimizer", "slot_suffix slots")
OPTIMIZERS = {"adam": Optimizer("/Adam", 2), "sgd": Optimizer("/Momentum", 1)}

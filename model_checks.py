"""Whether a checkpoint fits the run about to use it: its network (--variant), its class count
(--dataset) and, to resume training, its optimizer (--optimizer), each refused with one line
saying what to pass instead."""
import checkpoints
import network
import training_recipe
from guards import FCNError


def check_variant(checkpoint, variant, what="checkpoint"):
    """FCNError when the checkpoint is of the other network than variant; what names it in the
    message ('checkpoint' or '--init_from')."""
    found = network.checkpoint_variant(checkpoint)
    if found == variant:
        return
    if what == "--init_from":
        advice = ("--init_from works within one network: pass --variant=%s, or a checkpoint "
                  "of the %s network" % (found, variant))
    else:
        advice = ("pass --variant=%s (the network it was trained with), or point --logs_dir at "
                  "a checkpoint of the %s network" % (found, variant))
    raise FCNError("%s %s is of the %s network, not of --variant=%s; %s"
                   % (what, checkpoint, found, variant, advice))


def check_class_count(checkpoint, classes, settings):
    """FCNError when the checkpoint is of the other --variant (check_variant), or with both
    counts when its model has another number of classes than classes (a datasets.ClassInfo)."""
    check_variant(checkpoint, settings.variant)
    count = checkpoints.class_count(checkpoint, network.CLASS_COUNT_VARIABLES[settings.variant])
    if count is None or count == classes.num_classes:
        return
    if settings.mode == "train":
        advice = ("train in an empty --logs_dir with --init_from=%s to fine-tune it on this "
                  "dataset" % checkpoint)
    else:
        advice = "pass the --dataset (and --data_dir) it was trained on"
    raise FCNError("checkpoint %s has %d classes but --dataset=%s (%s) has %d; %s"
                   % (checkpoint, count, settings.dataset, settings.data_dir,
                      classes.num_classes, advice))


def check_optimizer(checkpoint, optimizer):
    """FCNError when the checkpoint holds the slots of another optimizer than --optimizer: the
    run it resumes would start that optimizer's state afresh, silently."""
    found = training_recipe.checkpoint_optimizer(checkpoint)
    if found is None or found == optimizer:
        return
    raise FCNError("checkpoint %s was trained with --optimizer=%s, not %s; resume it with "
                   "--optimizer=%s, or start a new run in an empty --logs_dir with "
                   "--init_from=%s (its weights only)"
                   % (checkpoint, found, optimizer, found, checkpoint))

"""A run's settings: the object FCN.py builds once from its flags and passes to every mode, and
what a training run records of it in its logs_dir (settings.json, this run's, and
settings_history.json, every run's since the first). No TensorFlow here.

The fields are FCN.py's flags, one for one (a test holds them equal); their defaults and their
meaning are the flags' (python FCN.py --help).
"""
import dataclasses
import json
import os
from typing import Optional

from guards import temporary_name, write_json_atomically, writing

SETTINGS_NAME = "settings.json"
HISTORY_NAME = "settings_history.json"
# What the modes that use a trained model take from its run's settings.json when the command
# line does not give it: how the model was trained, and on what.
RECORDED = ("dataset", "data_dir", "image_size", "interpolation", "variant")
# The settings that name folders: recorded as absolute paths, so that they mean the same from
# any working folder.
FOLDERS = ("logs_dir", "data_dir", "model_dir")
# The training recipe's settings (docs/recipes.md), which a resumed run should repeat.
RECIPE = ("augment", "min_scale_factor", "max_scale_factor", "lr_schedule", "warmup_steps",
          "optimizer", "momentum", "weight_decay", "class_weights", "hard_pixel_fraction")


@dataclasses.dataclass(frozen=True)
class Settings:
    # what to run
    mode: str
    debug: bool
    verbose: bool
    # folders
    logs_dir: str
    data_dir: str
    model_dir: str
    # the data
    dataset: str
    ignore_label: Optional[int]
    init_from: str
    # training
    batch_size: int
    learning_rate: float
    image_size: int
    interpolation: str
    max_iterations: int
    log_every: int
    save_every: int
    validation_images: int
    seed: int
    precision: str
    variant: str
    # the training recipe
    augment: str
    min_scale_factor: float
    max_scale_factor: float
    lr_schedule: str
    warmup_steps: int
    optimizer: str
    momentum: float
    weight_decay: float
    class_weights: str
    hard_pixel_fraction: float
    # several devices or machines
    distribute: str
    devices: str
    all_reduce: str
    worker_timeout: int
    # predict
    image: str
    resize: bool
    output_dir: str
    tile_size: int
    tile_overlap: Optional[int]
    max_size: int
    # evaluation
    eval_scales: str
    eval_flip: bool
    # export
    export_dir: str
    export_format: str
    export_image_size: str

    def replace(self, **changes):
        """A copy with these fields changed."""
        return dataclasses.replace(self, **changes)

    def as_dict(self):
        return dataclasses.asdict(self)


def field_names():
    return [field.name for field in dataclasses.fields(Settings)]


def as_recorded(settings):
    """The dict settings.json holds of settings: its folders absolute."""
    return dict(settings.as_dict(), **{name: os.path.abspath(getattr(settings, name))
                                       for name in FOLDERS if getattr(settings, name)})


def recorded(logs_dir):
    """The settings (a dict) of the run recorded in logs_dir, {} when there is none or it cannot
    be read (an older logs folder, or the original implementation's)."""
    try:
        with open(os.path.join(logs_dir, SETTINGS_NAME), encoding="utf-8") as f:
            content = json.load(f)
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def with_recorded(settings, given, logs_dir=None):
    """(settings, lines to print): for each of RECORDED not in given (the flags on the command
    line), the value the run in logs_dir (--logs_dir) recorded; a given one that differs from it
    is kept, with a warning line."""
    run = recorded(logs_dir or settings.logs_dir)
    taken, lines = {}, []
    for name in RECORDED:
        if name not in run or run[name] in (None, ""):
            continue
        if name not in given:
            taken[name] = run[name]
        elif run[name] != getattr(settings, name):
            lines.append("Warning: --%s=%s differs from the %s the model was trained with (%s); "
                         "using %s" % (name, getattr(settings, name), run[name],
                                       SETTINGS_NAME, getattr(settings, name)))
    if taken:
        lines.insert(0, "From %s (how the model was trained): %s" % (
            os.path.join(logs_dir or settings.logs_dir, SETTINGS_NAME),
            ", ".join("%s=%s" % item for item in taken.items())))
    return settings.replace(**taken), lines


def recipe_changes(settings, logs_dir):
    """One warning line for each setting of RECIPE that differs from what the run in logs_dir
    recorded: resuming with it changes the recipe from the checkpoint on, which may be meant
    (a lower rate) or a flag forgotten. A run that recorded none (older) is not compared."""
    run = recorded(logs_dir)
    return ["Warning: resuming a run trained with --%s=%s (%s) with --%s=%s: the recipe changes "
            "from here on; repeat its flags to keep it" % (
                name, run[name], os.path.join(logs_dir, SETTINGS_NAME), name,
                getattr(settings, name))
            for name in RECIPE if name in run and run[name] != getattr(settings, name)]


def history(path):
    """The list of earlier runs' settings in the history file at path; [] when there is none.
    A file that is not such a list is kept aside (renamed), never overwritten."""
    try:
        with open(path, encoding="utf-8") as f:
            runs = json.load(f)
        if isinstance(runs, list):
            return runs
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        pass
    kept = temporary_name(path).replace(".part-", ".unreadable-")
    print("Warning: %s is not a list of settings; kept as %s, a new history begun" % (path, kept))
    os.replace(path, kept)
    return []


def record(logs_dir, settings):
    """Writes settings (a dict) to <logs_dir>/settings.json, this run's, and appends them to
    settings_history.json, every run's since the first, oldest first (both atomically)."""
    history_path = os.path.join(logs_dir, HISTORY_NAME)
    with writing(history_path):
        write_json_atomically(history_path, history(history_path) + [settings])
    path = os.path.join(logs_dir, SETTINGS_NAME)
    with writing(path):
        write_json_atomically(path, settings)

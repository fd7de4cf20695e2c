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
    tile_overlap: int
    max_size: int
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

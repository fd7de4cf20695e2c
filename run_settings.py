"""What a training run records of its settings in its logs_dir: settings.json, this run's, and
settings_history.json, every run's since the first. No TensorFlow here."""
import json
import os

from guards import temporary_name, write_json_atomically, writing

SETTINGS_NAME = "settings.json"
HISTORY_NAME = "settings_history.json"


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
    """Writes settings to <logs_dir>/settings.json, this run's, and appends them to
    settings_history.json, every run's since the first, oldest first (both atomically)."""
    history_path = os.path.join(logs_dir, HISTORY_NAME)
    with writing(history_path):
        write_json_atomically(history_path, history(history_path) + [settings])
    path = os.path.join(logs_dir, SETTINGS_NAME)
    with writing(path):
        write_json_atomically(path, settings)

"""Session-wide fixtures: generated data is built once per test session, in a temp folder."""
import os
import sys

# The project is a set of flat top-level scripts; make them importable from the tests.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import shutil  # noqa: E402

import pytest  # noqa: E402

# ---- module folders: removed when the module's tests all passed ----------------------------------

_MODULES_WITH_FAILURES = set()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.failed:
        _MODULES_WITH_FAILURES.add(item.nodeid.split("::")[0])


@pytest.fixture(scope="module")
def module_tmp(request, tmp_path_factory):
    """mktemp(name) for a module's fixtures. Its folders go when the module ends, unless one of
    its tests failed (kept then, as pytest keeps a failed test's tmp_path): a full-size
    training run leaves checkpoints of 1.7 GB each."""
    made = []

    def mktemp(name):
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    if request.node.nodeid not in _MODULES_WITH_FAILURES:
        for folder in made:
            shutil.rmtree(str(folder), ignore_errors=True)


# ---- the network side: a synthetic VGG-19 .mat --------------------------------------------------

@pytest.fixture(scope="session")
def vgg_mat_paths(tmp_path_factory):
    """{'beta16': path, 'meta': path}: the same synthetic VGG-19 in both MatConvNet layouts."""
    from tests.make_vgg_mat import write_vgg19_mat
    folder = tmp_path_factory.mktemp("vgg")
    paths = {}
    for layout in ("beta16", "meta"):
        paths[layout] = str(folder / ("vgg19-%s.mat" % layout))
        write_vgg19_mat(paths[layout], layout=layout, seed=0)
    return paths


@pytest.fixture(scope="session")
def vgg(vgg_mat_paths):
    """(weights, mean_pixel) of the full-size synthetic VGG-19, as FCN.inference takes them."""
    import vgg_weights
    path = vgg_mat_paths["beta16"]
    return vgg_weights.load_vgg19(vgg_weights.load_mat(path), path)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """The --model_dir of the tests' runs: the narrow VGG-19 (tests/make_vgg_mat.NARROW, VGG's
    topology and names at an eighth of its widths, fc6 and fc7 at 64), which every mode builds
    from it or from its checkpoints: checkpoints of megabytes, steps of milliseconds."""
    from tests.make_vgg_mat import NARROW, write_vgg19_mat
    from vgg_weights import VGG19_FILE_NAME
    folder = tmp_path_factory.mktemp("Model_zoo")
    write_vgg19_mat(str(folder / VGG19_FILE_NAME), seed=0, widths=NARROW)
    return str(folder)


@pytest.fixture(scope="session")
def narrow_vgg(model_dir):
    """(weights, mean_pixel, widths) of the narrow VGG-19 in model_dir."""
    import vgg_weights
    return vgg_weights.load_vgg(model_dir)


@pytest.fixture(scope="session")
def full_model_dir(tmp_path_factory, vgg_mat_paths):
    """A --model_dir holding the full-size synthetic .mat under the real file's name, for the
    runs whose size is what they test."""
    from vgg_weights import VGG19_FILE_NAME
    folder = tmp_path_factory.mktemp("Model_zoo_full")
    shutil.copy(vgg_mat_paths["beta16"], str(folder / VGG19_FILE_NAME))
    return str(folder)


@pytest.fixture(scope="session")
def paper_model_dir(tmp_path_factory):
    """A --model_dir for --variant=paper: the narrow VGG-19 with its fc6 and fc7."""
    from tests.make_demo import write_paper_model_dir
    from tests.make_vgg_mat import NARROW
    return write_paper_model_dir(str(tmp_path_factory.mktemp("paper")), seed=0, widths=NARROW)


@pytest.fixture(scope="session")
def full_paper_model_dir(tmp_path_factory):
    """A --model_dir for --variant=paper at full size: the synthetic VGG-19 (beta16 layout), with
    fc6 and fc7 of their real shapes (sparse, the file compressed). Its own file, so that the
    reference's fixtures do not load 475 MB of fc weights they never use."""
    from tests.make_demo import write_paper_model_dir
    return write_paper_model_dir(str(tmp_path_factory.mktemp("paper_full")), seed=0)


# ---- the dataset side: a small ADEChallengeData2016 ---------------------------------------------

@pytest.fixture(scope="session")
def scene_data_dir(tmp_path_factory):
    """A --data_dir holding a generated ADEChallengeData2016 (tests/make_dataset.py): 24 training
    pairs (ADE_train_00000003.jpg grayscale) and ADE_train_00000025.jpg without annotation,
    8 validation pairs, objectInfo150.txt. Shared: copy it before changing anything in it."""
    from tests.make_dataset import make_scene_dataset
    root = tmp_path_factory.mktemp("MIT_SceneParsing")
    make_scene_dataset(str(root), n_train=24, n_val=8, seed=0)
    return str(root)


@pytest.fixture(scope="session")
def scene_data(tmp_path_factory):
    """A smaller --data_dir for the command-line tests: 8 training and 5 validation pairs."""
    from tests.make_dataset import make_scene_dataset
    root = str(tmp_path_factory.mktemp("scene"))
    make_scene_dataset(root, n_train=8, n_val=5, seed=1)
    return root


@pytest.fixture(scope="session")
def dirs(scene_data, model_dir):
    """--data_dir and --model_dir of the generated data and the narrow VGG-19, for FCN.py's
    command line."""
    return ["--data_dir=" + scene_data, "--model_dir=" + model_dir]


# ---- a trained model ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def trained(tmp_path_factory, dirs):
    """(logs_dir, what training printed) of the narrow network after 3 steps on scene_data
    (checkpoints at steps 2 and 3). Shared: copy it (copy_of) before changing anything in it."""
    from tests.project import SMALL, run_fcn
    logs = str(tmp_path_factory.mktemp("trained") / "logs")
    out = run_fcn("--mode=train", "--logs_dir=" + logs, "--max_iterations=3", "--log_every=1",
                  "--save_every=2", *(SMALL + dirs))
    return logs, out


@pytest.fixture(scope="session")
def full_size_logs(tmp_path_factory, vgg, full_model_dir):
    """A logs_dir holding a checkpoint of the full-size network (VGG-19's widths, 3 classes,
    its initial weights, no optimizer slots) and its classes.json: for the runs whose size is
    what they test (predict's memory, the export's files). (logs_dir, its flags)."""
    import datasets
    from tests.make_dataset import FOLDER_CLASSES
    from tests.make_model import write_initial_model
    from tests.project import SMALL
    logs = write_initial_model(str(tmp_path_factory.mktemp("full_size") / "logs"), vgg,
                               datasets.class_info(datasets.FOLDER, list(FOLDER_CLASSES)))
    return logs, ["--logs_dir=" + logs, "--model_dir=" + full_model_dir] + SMALL


@pytest.fixture
def copy_of(tmp_path):
    """copy_of(folder): a copy of folder in this test's tmp_path, to change at will."""
    def copy(folder):
        target = str(tmp_path / ("copy_%s" % os.path.basename(os.path.normpath(folder))))
        shutil.copytree(folder, target)
        return target
    return copy


@pytest.fixture(scope="session")
def scene_dataset_zip(tmp_path_factory, scene_data_dir):
    """ADEChallengeData2016.zip of scene_data_dir's dataset, laid out as the real zip."""
    from tests.make_dataset import make_dataset_zip
    folder = tmp_path_factory.mktemp("ade_zip")
    return make_dataset_zip(scene_data_dir, str(folder / "ADEChallengeData2016.zip"))

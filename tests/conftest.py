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
    its tests failed (kept then, as pytest keeps a failed test's tmp_path): a training fixture
    leaves checkpoints of 1.7 GB each, and a whole suite's filled a CI disk."""
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
    """(weights, mean_pixel) of the synthetic VGG-19, as FCN.inference takes them."""
    import vgg_weights
    path = vgg_mat_paths["beta16"]
    return vgg_weights.load_vgg19(vgg_weights.load_mat(path), path)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, vgg_mat_paths):
    """A --model_dir holding the synthetic .mat under the real file's name."""
    import shutil
    folder = tmp_path_factory.mktemp("Model_zoo")
    shutil.copy(vgg_mat_paths["beta16"], str(folder / "imagenet-vgg-verydeep-19.mat"))
    return str(folder)


@pytest.fixture(scope="session")
def paper_model_dir(tmp_path_factory):
    """A --model_dir for --variant=paper: the same synthetic VGG-19 (beta16 layout), with fc6 and
    fc7 of their real shapes (sparse, the file compressed). Its own file, so that the reference's
    fixtures do not load 475 MB of fc weights they never use."""
    from tests.make_demo import write_paper_model_dir
    return write_paper_model_dir(str(tmp_path_factory.mktemp("paper")), seed=0)


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
    """--data_dir and --model_dir of the generated data and VGG-19, for FCN.py's command line."""
    return ["--data_dir=" + scene_data, "--model_dir=" + model_dir]


@pytest.fixture(scope="session")
def scene_dataset_zip(tmp_path_factory, scene_data_dir):
    """ADEChallengeData2016.zip of scene_data_dir's dataset, laid out as the real zip."""
    from tests.make_dataset import make_dataset_zip
    folder = tmp_path_factory.mktemp("ade_zip")
    return make_dataset_zip(scene_data_dir, str(folder / "ADEChallengeData2016.zip"))

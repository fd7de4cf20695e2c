"""--mode=export: the SavedModel loaded by plain TensorFlow in a process that knows nothing of this
project, its signature, the TFLite and ONNX files converted from it, OpenVINO on the SavedModel
and on the ONNX file, the version folders and the refusals. One model of the 3-class folder
dataset, trained a few steps at 64x64, exported once."""
import json
import os
import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest
from PIL import Image

import FCN
import export_model
import tiles
from guards import FCNError
from tests.make_dataset import FOLDER_CLASSES, make_folder_dataset
from tests.project import ROOT, SMALL, run_fcn

STEPS = 2
TFLITE = ("tflite", "tflite_fp16", "tflite_int8")
# (height, width) of the test images: odd sizes, not multiples of 32; two of the second size
# make the batch of 2.
SIZES = ((50, 70), (97, 131), (97, 131))

# Runs in a fresh interpreter, away from the project (its cwd a temp folder, no PYTHONPATH):
# loads the SavedModel as any TF2 program does and runs serving_default.
LOAD_SAVED_MODEL = r"""
import os
import sys
import numpy as np
import tensorflow as tf
version_dir, images_path, out_path, root = sys.argv[1:]
model = tf.saved_model.load(version_dir)
serve = model.signatures["serving_default"]
images = np.load(images_path)
results = {}
for k in range(len(images.files)):
    out = serve(images=tf.constant(images["image%d" % k][None]))
    results["labels%d" % k] = out["labels"].numpy()[0]
    results["confidence%d" % k] = out["confidence"].numpy()[0]
out = serve(images=tf.constant(np.stack([images["image1"], images["image2"]])))
results["batch_labels"] = out["labels"].numpy()
results["batch_confidence"] = out["confidence"].numpy()
# The project's own files, not a virtualenv that may live inside its folder (CI makes one there).
own_folders = {os.path.normcase(os.path.normpath(os.path.join(root, part)))
               for part in ("", "tests", "benchmarks")}
ours = [name for name, module in list(sys.modules.items())
        if getattr(module, "__file__", None)
        and os.path.normcase(os.path.dirname(os.path.abspath(module.__file__))) in own_folders]
assert not ours, ours
np.savez(out_path, **results)
"""


def _test_images(data_dir, folder):
    """The validation images of the folder dataset resized to SIZES (their scenes: a model
    trained on them has something to say), saved as PNGs in folder; returns the arrays."""
    os.makedirs(folder, exist_ok=True)
    source = os.path.join(data_dir, "images", "validation")
    names = sorted(os.listdir(source))
    images = []
    for k, (height, width) in enumerate(SIZES):
        picture = Image.open(os.path.join(source, names[k % len(names)])).convert("RGB")
        image = np.asarray(picture.resize((width, height), Image.BILINEAR))
        imageio.imwrite(os.path.join(folder, "image%d.png" % k), image)
        images.append(image)
    return images


@pytest.fixture(scope="module")
def trained(module_tmp, model_dir):
    """(logs_dir, data_dir, flags) of a folder-dataset model trained STEPS steps."""
    root = module_tmp("export")
    data_dir = make_folder_dataset(str(root / "mine"), n_train=6, n_val=3)
    logs = str(root / "logs")
    flags = ["--dataset=folder", "--data_dir=" + data_dir, "--model_dir=" + model_dir,
             "--logs_dir=" + logs]
    run_fcn("--mode=train", "--max_iterations=%d" % STEPS, "--save_every=%d" % STEPS,
            "--log_every=1", *(flags + SMALL))
    return logs, data_dir, flags


@pytest.fixture(scope="module")
def exported(trained, module_tmp):
    """The export of every TFLite kind, and the predictions of --mode=predict and of the
    SavedModel (in a fresh process) on the test images."""
    logs, data_dir, flags = trained
    root = module_tmp("exported")
    images = _test_images(data_dir, str(root / "images"))
    out = run_fcn("--mode=export", "--export_format=saved_model," + ",".join(TFLITE), *flags)
    version_dir = os.path.join(logs, "export", str(STEPS))
    run_fcn("--mode=predict", "--image=" + str(root / "images"),
            "--output_dir=" + str(root / "predicted"), *flags)
    predicted = [imageio.imread(str(root / "predicted" / ("image%d_pred.png" % k)))
                 for k in range(len(images))]
    np.savez(str(root / "images.npz"), **{"image%d" % k: image for k, image in enumerate(images)})
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", LOAD_SAVED_MODEL, version_dir,
                           str(root / "images.npz"), str(root / "served.npz"), ROOT],
                          cwd=str(root), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = dict(np.load(str(root / "served.npz")))
    return {"version_dir": version_dir, "images": images, "predicted": predicted,
            "served": served, "out": out, "root": root}


def _tflite_outputs(path, images):
    """[(labels, confidence)] of each image alone, and of images 1 and 2 as a batch, from the
    LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=path)
    run = interpreter.get_signature_runner(export_model.SIGNATURE)
    results = [run(images=image[None]) for image in images]
    batch = run(images=np.stack([images[1], images[2]]))
    return interpreter, [(r["labels"][0], r["confidence"][0]) for r in results], batch


def _agreement(a, b):
    return float(np.mean(np.asarray(a) == np.asarray(b)))


# ---- the SavedModel ----------------------------------------------------------------------------

def test_the_saved_model_labels_equal_predict_on_odd_sizes_and_a_batch(exported):
    served, predicted = exported["served"], exported["predicted"]
    for k, (height, width) in enumerate(SIZES):
        labels = served["labels%d" % k]
        assert labels.shape == (height, width) and labels.dtype == np.int32
        np.testing.assert_array_equal(labels, predicted[k])
    assert served["batch_labels"].shape == (2,) + SIZES[1]
    assert served["batch_labels"].dtype == np.int32
    np.testing.assert_array_equal(served["batch_labels"][0], predicted[1])
    np.testing.assert_array_equal(served["batch_labels"][1], predicted[2])
    assert len(np.unique(np.concatenate([p.ravel() for p in predicted]))) > 1  # not one class


def test_confidence_is_a_probability_of_the_chosen_of_three_classes(exported):
    served = exported["served"]
    for k, size in enumerate(SIZES):
        confidence = served["confidence%d" % k]
        assert confidence.shape == size and confidence.dtype == np.float32
        # the largest of 3 probabilities summing to 1: at least 1/3, at most 1
        assert confidence.min() >= 1 / 3 - 1e-6 and confidence.max() <= 1 + 1e-6
    np.testing.assert_allclose(served["batch_confidence"][0], served["confidence1"], atol=1e-5)


def test_saved_model_cli_lists_the_signature_with_dynamic_dimensions(exported):
    cli = [sys.executable, "-c", "from tensorflow.python.tools import saved_model_cli; "
           "saved_model_cli.main()", "show", "--dir", exported["version_dir"], "--all"]
    out = subprocess.run(cli, capture_output=True, text=True, timeout=300).stdout
    signature = out[out.index("signature_def['serving_default']"):]
    lines = [line.strip() for line in signature.splitlines()]
    inputs = lines.index("inputs['images'] tensor_info:")
    assert lines[inputs + 1:inputs + 4] == ["dtype: DT_UINT8", "shape: (-1, -1, -1, 3)",
                                            "name: images:0"]
    labels = lines.index("outputs['labels'] tensor_info:")
    assert lines[labels + 1:labels + 3] == ["dtype: DT_INT32", "shape: (-1, -1, -1)"]
    confidence = lines.index("outputs['confidence'] tensor_info:")
    assert lines[confidence + 1:confidence + 3] == ["dtype: DT_FLOAT", "shape: (-1, -1, -1)"]


def test_the_version_folder_holds_the_model_its_classes_and_nothing_of_adam(exported, trained):
    version_dir = exported["version_dir"]
    with open(os.path.join(version_dir, "assets", "classes.txt"), encoding="utf-8") as f:
        assert f.read().splitlines() == list(FOLDER_CLASSES)
    with open(os.path.join(version_dir, "assets", "classes.json"), encoding="utf-8") as f:
        assert json.load(f)["class_names"] == list(FOLDER_CLASSES)
    with open(os.path.join(version_dir, "export.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    assert manifest["step"] == STEPS and manifest["num_classes"] == 3
    assert sorted(manifest["files"]) == sorted(("saved_model",) + TFLITE)
    # No staging folder is left, and only the version (a number TF Serving serves) is there.
    assert os.listdir(os.path.dirname(version_dir)) == [str(STEPS)]
    # The 44 network variables in float32, none of Adam's slots: a third of the checkpoint.
    import tensorflow.compat.v1 as tf
    variables = dict(tf.train.list_variables(os.path.join(version_dir, "variables",
                                                           "variables")))
    in_checkpoint = dict(tf.train.list_variables(tf.train.latest_checkpoint(trained[0])))
    network = {n: s for n, s in in_checkpoint.items() if "Adam" not in n and
               n.startswith("inference/")}
    assert variables == network and len(network) == 44
    weights = sum(int(np.prod(s)) * 4 for s in network.values())
    variables_bytes = export_model.file_nbytes(os.path.join(version_dir, "variables"))
    assert weights <= variables_bytes < 1.01 * weights


# ---- TFLite ------------------------------------------------------------------------------------

# Floors below what was measured on this model (docs/deploying.md, "Sizes and times").
TFLITE_FLOORS = {"tflite": 0.999, "tflite_fp16": 0.995, "tflite_int8": 0.95}


@pytest.mark.parametrize("kind", TFLITE)
def test_each_tflite_file_runs_in_litert_at_any_size_and_agrees(exported, kind):
    served, images = exported["served"], exported["images"]
    path = os.path.join(exported["version_dir"], export_model.FORMAT_FILES[kind])
    interpreter, results, batch = _tflite_outputs(path, images)
    assert list(interpreter.get_input_details()[0]["shape_signature"]) == [-1, -1, -1, 3]
    agreements = []
    for k, (labels, confidence) in enumerate(results):
        assert labels.shape == SIZES[k] and labels.dtype == np.int32
        agreements.append(_agreement(labels, served["labels%d" % k]))
    agreements.append(_agreement(batch["labels"], served["batch_labels"]))
    print("%s: labels agreeing with the SavedModel's: %s" % (kind, agreements))
    assert min(agreements) >= TFLITE_FLOORS[kind], agreements
    if kind == "tflite":
        np.testing.assert_allclose(results[0][1], served["confidence0"], atol=1e-3)


def test_the_tflite_files_shrink_with_their_weights(exported):
    sizes = {kind: os.path.getsize(os.path.join(exported["version_dir"],
                                                export_model.FORMAT_FILES[kind]))
             for kind in TFLITE}
    assert 0.45 < sizes["tflite_fp16"] / sizes["tflite"] < 0.55
    assert 0.2 < sizes["tflite_int8"] / sizes["tflite"] < 0.3


@pytest.mark.slow  # two conversions of a 0.6 GB model
def test_the_full_size_export_holds_its_weights_once_and_shrinks_them_as_asked(full_size_logs,
                                                                               tmp_path):
    import tensorflow.compat.v1 as tf
    logs, flags = full_size_logs
    export_dir = str(tmp_path / "export")
    run_fcn("--mode=export", "--export_dir=" + export_dir,
            "--export_format=tflite_fp16,tflite_int8", *flags)
    version_dir = os.path.join(export_dir, "1")
    shapes = dict(tf.train.list_variables(tf.train.latest_checkpoint(logs)))
    weights = sum(int(np.prod(s)) * 4 for s in shapes.values())
    # VGG-19's widths: 142 M parameters at 3 classes.
    assert len(shapes) == 44 and weights > 500e6
    assert weights <= export_model.file_nbytes(os.path.join(version_dir, "variables")) \
        < 1.01 * weights
    sizes = {kind: os.path.getsize(os.path.join(version_dir, export_model.FORMAT_FILES[kind]))
             for kind in ("tflite_fp16", "tflite_int8")}
    assert 0.45 < sizes["tflite_fp16"] / weights < 0.55
    assert 0.2 < sizes["tflite_int8"] / weights < 0.3


def test_export_image_size_bakes_a_fixed_input(trained, exported, tmp_path):
    logs, _, flags = trained
    export_dir = str(tmp_path / "fixed")
    run_fcn("--mode=export", "--export_dir=" + export_dir, "--export_format=tflite",
            "--export_image_size=50x70", *flags)
    path = os.path.join(export_dir, str(STEPS), "fcn.tflite")
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=path)
    detail = interpreter.get_input_details()[0]
    assert list(detail["shape"]) == list(detail["shape_signature"]) == [1, 50, 70, 3]
    labels = interpreter.get_signature_runner(export_model.SIGNATURE)(
        images=exported["images"][0][None])["labels"][0]
    assert _agreement(labels, exported["served"]["labels0"]) >= 0.999


# ---- ONNX --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def onnx_version_dir(trained, module_tmp):
    """The version folder of an ONNX export of the trained model, in an export_dir of its own;
    shared by the tests of the ONNX file, all slow: the conversion takes tens of seconds even
    on the narrow network."""
    logs, _, flags = trained
    export_dir = str(module_tmp("onnx") / "export")
    run_fcn("--mode=export", "--export_dir=" + export_dir, "--export_format=onnx", *flags)
    return os.path.join(export_dir, str(STEPS))


def _cases(exported):
    """[(batch of images, the SavedModel's labels of it)]: each test image alone, and images 1
    and 2 as a batch of 2."""
    served, images = exported["served"], exported["images"]
    cases = [(image[None], served["labels%d" % k][None]) for k, image in enumerate(images)]
    cases.append((np.stack([images[1], images[2]]), served["batch_labels"]))
    return cases


@pytest.mark.slow  # the ONNX conversion (onnx_version_dir)
def test_onnx_labels_agree_with_the_saved_model(exported, onnx_version_dir):
    import onnxruntime
    version_dir = onnx_version_dir
    with open(os.path.join(version_dir, "export.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    print("ONNX: %s" % manifest["files"]["onnx"],
          "conversion peak memory", manifest.get("onnx_conversion_peak_bytes"))
    session = onnxruntime.InferenceSession(os.path.join(version_dir, "fcn.onnx"),
                                           providers=["CPUExecutionProvider"])
    (image_input,) = session.get_inputs()
    assert image_input.type == "tensor(uint8)" and len(image_input.shape) == 4
    assert not any(isinstance(d, int) for d in image_input.shape[:3])  # N, H, W dynamic
    names = [output.name for output in session.get_outputs()]
    for batch, expected in _cases(exported):
        outputs = dict(zip(names, session.run(None, {image_input.name: batch})))
        labels = next(v for n, v in outputs.items() if "labels" in n)
        assert labels.shape == expected.shape
        assert _agreement(labels, expected) >= 0.999


# ---- OpenVINO ----------------------------------------------------------------------------------

def _openvino_f32(path):
    """The model at path (a SavedModel folder or an ONNX file) compiled by OpenVINO for the CPU
    at float32: its CPU default is bf16 where the CPU has bf16 (AVX512_BF16, AMX)."""
    import openvino
    core = openvino.Core()
    model = core.read_model(path)
    (image_input,) = model.inputs
    assert image_input.get_element_type() == openvino.Type.u8
    assert str(image_input.get_partial_shape()) == "[?,?,?,3]"  # N, H, W dynamic
    types = {output.get_any_name(): output.get_element_type() for output in model.outputs}
    assert types == {"labels": openvino.Type.i32, "confidence": openvino.Type.f32}
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32
    return compiled


def _openvino_agreements(compiled, exported):
    """The share of labels equal to the SavedModel's, for each of _cases."""
    agreements = []
    for batch, expected in _cases(exported):
        labels = compiled(batch)[compiled.output("labels")]
        assert labels.shape == expected.shape and labels.dtype == np.int32
        agreements.append(_agreement(labels, expected))
    return agreements


def test_openvino_reads_the_saved_model_and_labels_as_predict_at_f32(exported):
    compiled = _openvino_f32(exported["version_dir"])
    for k, image in enumerate(exported["images"]):
        results = compiled(image[None])
        labels = results[compiled.output("labels")][0]
        assert labels.shape == SIZES[k]
        # --mode=predict's PNG, the SavedModel aside
        assert _agreement(labels, exported["predicted"][k]) >= 0.999
        np.testing.assert_allclose(results[compiled.output("confidence")][0],
                                   exported["served"]["confidence%d" % k], atol=1e-4)
    agreements = _openvino_agreements(compiled, exported)
    print("OpenVINO on the SavedModel: labels agreeing with the SavedModel's: %s" % agreements)
    assert min(agreements) >= 0.999, agreements


@pytest.mark.slow  # the ONNX conversion (onnx_version_dir)
def test_openvino_reads_the_onnx_file_and_agrees_with_the_saved_model_at_f32(exported,
                                                                            onnx_version_dir):
    compiled = _openvino_f32(os.path.join(onnx_version_dir, "fcn.onnx"))
    agreements = _openvino_agreements(compiled, exported)
    print("OpenVINO on fcn.onnx: labels agreeing with the SavedModel's: %s" % agreements)
    assert min(agreements) >= 0.999, agreements


# ---- refusals, and what a failed export leaves -------------------------------------------------

def _settings(**changes):
    return FCN.current_settings().replace(**dict(changes, mode="export"))


@pytest.mark.parametrize("changes, message", [
    ({"export_format": "tflite,coreml"},
     "--export_format=tflite,coreml: unknown format coreml; use a comma-separated list of "
     "saved_model, tflite, tflite_fp16, tflite_int8, onnx"),
    ({"export_format": ""}, "--export_format=: no format"),
    ({"export_image_size": "640"}, "--export_image_size=640: use HxW"),
    ({"export_image_size": "0x64"}, "--export_image_size=0x64: use HxW"),
])
def test_bad_export_flags_are_refused_before_any_work(changes, message, tmp_path):
    with pytest.raises(FCNError) as error:
        export_model.check_export_settings(_settings(logs_dir=str(tmp_path), **changes))
    assert str(error.value).startswith(message)


def test_a_missing_converter_is_named_with_its_pip_package(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if not installed
    with pytest.raises(FCNError, match=r"^--export_format=onnx needs the Python package tf2onnx, "
                                       r"which is not installed: pip install tf2onnx$"):
        export_model.check_export_settings(_settings(export_format="tflite,onnx"))


def test_no_checkpoint_is_one_line_on_the_command_line(tmp_path, model_dir):
    out = run_fcn("--mode=export", "--logs_dir=" + str(tmp_path), "--model_dir=" + model_dir,
                  expect=2)
    assert out.strip().splitlines()[-1] == (
        "FCN.py: error: no checkpoint in --logs_dir %s to export; train first (--mode=train) "
        "or point --logs_dir at a folder with model.ckpt-* files" % tmp_path)
    assert "Traceback" not in out and not os.path.exists(tmp_path / "export")


def test_an_existing_version_is_never_overwritten(trained, exported):
    logs, data_dir, _ = trained
    before = os.path.getmtime(os.path.join(exported["version_dir"], "saved_model.pb"))
    with pytest.raises(FCNError, match="^%s already exists: an exported version is never "
                                       "overwritten" % exported["version_dir"]):
        FCN.run(_settings(logs_dir=logs, dataset="folder", data_dir=data_dir))
    assert os.path.getmtime(os.path.join(exported["version_dir"], "saved_model.pb")) == before


def test_an_export_dir_that_cannot_be_written_is_refused(trained, tmp_path):
    logs, data_dir, _ = trained
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(FCNError, match="^--export_dir %s is not a writable folder" % blocker):
        FCN.run(_settings(logs_dir=logs, dataset="folder", data_dir=data_dir,
                          export_dir=str(blocker)))


def test_a_failed_conversion_leaves_no_version_and_no_staging(trained, tmp_path, monkeypatch):
    logs, data_dir, _ = trained

    def fail(saved_model_dir, path, kind):
        assert os.path.isfile(os.path.join(saved_model_dir, "saved_model.pb"))
        raise FCNError("the converter failed")

    monkeypatch.setattr(export_model, "convert_tflite", fail)
    export_dir = str(tmp_path / "export")
    with pytest.raises(FCNError, match="the converter failed"):
        FCN.run(_settings(logs_dir=logs, dataset="folder", data_dir=data_dir,
                          export_dir=export_dir, export_format="tflite"))
    assert os.listdir(export_dir) == []


def test_staging_folders_of_dead_exports_are_removed_and_others_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    names = ["7.part-%s-0a1b2c3d" % dead, "7.part-%d-0a1b2c3d" % os.getpid(), "7", "notes"]
    for name in names:
        os.makedirs(str(tmp_path / name))
    assert export_model.remove_stale_staging(str(tmp_path)) == [names[0]]
    assert sorted(os.listdir(str(tmp_path))) == sorted(names[1:])


# ---- the graph's pieces, against numpy -----------------------------------------------------------

def test_portable_patches_equal_numpys_patches_and_extract_patches():
    import tensorflow.compat.v1 as tf
    x = np.random.default_rng(0).standard_normal((2, 5, 6, 3)).astype(np.float32)
    size = 3
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    expected = np.zeros((2, 5, 6, size * size * 3), np.float32)
    for r in range(5):
        for c in range(6):
            # the patch around (r, c), flattened row, column, channel
            expected[:, r, c] = padded[:, r:r + size, c:c + size, :].reshape(2, -1)
    with tf.Graph().as_default(), tf.Session() as sess:
        inp = tf.placeholder(tf.float32, [None, None, None, 3])
        ours, theirs = sess.run([
            export_model.portable_patches(inp, size, size),
            tf.image.extract_patches(inp, [1, size, size, 1], [1, 1, 1, 1], [1, 1, 1, 1],
                                     "SAME")], {inp: x})
    np.testing.assert_array_equal(ours, expected)
    np.testing.assert_array_equal(theirs, expected)


def test_the_graphs_padding_equals_predicts():
    import tensorflow.compat.v1 as tf
    image = np.random.default_rng(1).integers(0, 256, (37, 70, 3)).astype(np.uint8)
    mean = np.array([123.68, 116.779, 103.939])
    with tf.Graph().as_default(), tf.Session() as sess:
        inp = tf.placeholder(tf.uint8, [None, None, None, 3])
        ours = sess.run(export_model.pad_to_multiple(tf.cast(inp, tf.float32), 32, mean),
                        {inp: image[None]})[0]
    assert ours.shape == (64, 96, 3)
    np.testing.assert_array_equal(ours[:37, :70], image.astype(np.float32))
    for c in range(3):
        assert (ours[37:, :, c] == np.float32(mean[c])).all()
        assert (ours[:, 70:, c] == np.float32(mean[c])).all()
    np.testing.assert_array_equal(ours, tiles.pad_to_multiple(image, 32, mean)[0])


@pytest.mark.parametrize("text, formats", [
    ("saved_model", ["saved_model"]),
    ("onnx, tflite_int8,tflite", ["tflite", "tflite_int8", "onnx"]),
    ("tflite,tflite", ["tflite"]),
])
def test_formats_are_parsed_in_one_order(text, formats):
    assert export_model.parse_formats(text) == formats


def test_image_size_is_height_by_width():
    assert export_model.parse_image_size("480x640") == (480, 640)
    assert export_model.parse_image_size("") is None

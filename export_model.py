"""--mode=export: a trained model as a SavedModel (for TF Serving and TF2 code), and the TFLite and
ONNX files converted from it.

    python FCN.py --mode=export [--export_dir=DIR] [--export_format=saved_model,tflite,onnx]

Everything goes into <export_dir>/<global step>/, the numbered version folder TF Serving expects:
written into a staging folder next to it (<step>.part-<pid>-<hex>, which TF Serving ignores, not
being a number) and renamed when complete. The SavedModel is always written: every converter
starts from it.

The graph is built afresh from the network (network.build_model, whatever variant, width and
class count the model has) with resource variables, and restored from the newest readable
checkpoint: never the training graph, whose Adam slots would triple the size. Its signature
takes uint8 images of any size and does the padding to a multiple of 32 (with the mean pixel,
exactly as --mode=predict) and the crop back itself, so that a client needs to know nothing of
the network.
"""
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow.compat.v1 as tf

import checkpoints
import datasets
import model_checks
import network
import predicting
import tiles
import vgg_weights
from guards import FCNError, process_is_alive, remove_quietly, temporary_name, \
    ensure_writable_dir, write_json_atomically

# --export_format values, and the file each writes into the version folder (the SavedModel is
# the folder itself: saved_model.pb, variables/, assets/).
FORMAT_FILES = {
    "saved_model": None,
    "tflite": "fcn.tflite",            # float32
    "tflite_fp16": "fcn_fp16.tflite",  # float16 weights, computed in float32
    "tflite_int8": "fcn_int8.tflite",  # dynamic-range int8: int8 weights, float activations
    "onnx": "fcn.onnx",
}
# The modules a format's converter needs beyond TensorFlow, and the pip package of each.
CONVERTER_PACKAGES = {"onnx": (("tf2onnx", "tf2onnx"), ("onnx", "onnx"))}
ONNX_OPSET = 17

SIGNATURE = "serving_default"
INPUT = "images"  # uint8 [N, H, W, 3], RGB
OUTPUTS = ("labels", "confidence")  # int32 [N, H, W]; float32 [N, H, W]
CLASS_NAMES_ASSET = "classes.txt"  # one class name per line, line 1 class 0
MANIFEST_NAME = "export.json"
# With protobuf's compiled backend tf2onnx needs far more memory on the full network
# (docs/deploying.md).
CONVERTER_ENV = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}


# ---- the settings ------------------------------------------------------------------------------

def parse_formats(text):
    """'saved_model,tflite' -> the formats, in FORMAT_FILES' order; FCNError for an unknown one."""
    asked = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in asked if name not in FORMAT_FILES]
    if unknown or not asked:
        raise FCNError("--export_format=%s: %s; use a comma-separated list of %s"
                       % (text, "unknown format %s" % unknown[0] if unknown else "no format",
                          ", ".join(FORMAT_FILES)))
    return [name for name in FORMAT_FILES if name in asked]


def parse_image_size(text):
    """'480x640' -> (480, 640); '' -> None (any size)."""
    if not text:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or not int(match.group(1)) or not int(match.group(2)):
        raise FCNError("--export_image_size=%s: use HxW in pixels, e.g. 480x640 (any size: it "
                       "is padded inside the model)" % text)
    return int(match.group(1)), int(match.group(2))


def installed(module):
    """Whether module can be imported (without importing it: tf2onnx takes seconds)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing; sys.modules[module] = None
        return False


def missing_converter(formats):
    """None, or the FCNError line for the first format whose converter is not installed."""
    for name in formats:
        for module, package in CONVERTER_PACKAGES.get(name, ()):
            if not installed(module):
                return FCNError("--export_format=%s needs the Python package %s, which is not "
                                "installed: pip install %s" % (name, package, package))
    return None


def check_export_settings(settings):
    """(formats, image size) of the settings; FCNError for what cannot work, before any work."""
    formats = parse_formats(settings.export_format)
    image_size = parse_image_size(settings.export_image_size)
    problem = missing_converter(formats)
    if problem:
        raise problem
    return formats, image_size


def export_dir_of(settings):
    return settings.export_dir or os.path.join(settings.logs_dir, "export")


# ---- the version folder ------------------------------------------------------------------------

STAGING = re.compile(r"^\d+\.part-(\d+)-[0-9a-f]+$")


def remove_stale_staging(export_dir):
    """Removes the staging folders of exports whose process is gone (killed halfway); returns
    them. A running export's own is left alone."""
    removed = []
    for name in sorted(os.listdir(export_dir)):
        match = STAGING.match(name)
        if match and not process_is_alive(int(match.group(1))):
            print("Removing %s, left by an export that did not finish"
                  % os.path.join(export_dir, name))
            remove_quietly(os.path.join(export_dir, name))
            removed.append(name)
    return removed


def refuse_existing_version(version_dir):
    if os.path.exists(version_dir):
        raise FCNError("%s already exists: an exported version is never overwritten; remove it "
                       "to export this step again, or pass another --export_dir" % version_dir)


# ---- the graph ---------------------------------------------------------------------------------

def pad_to_multiple(images, multiple, fill):
    """float images [N, h, w, 3] padded at the bottom and right to multiples of `multiple` with
    the pixel fill, as tiles.pad_to_multiple does for predict (one pad per channel: tf.pad fills
    with one value)."""
    shape = tf.shape(images)
    # (m - side % m) % m, not floormod(-side, m): tf2onnx converts FloorMod of a negative
    # number as a truncating Mod (-50 mod 32 gave -18), which cropped the ONNX model's input.
    paddings = [[0, 0], [0, (multiple - shape[1] % multiple) % multiple],
                [0, (multiple - shape[2] % multiple) % multiple]]
    fill = np.asarray(fill, dtype=np.float32)
    return tf.stack([tf.pad(images[:, :, :, c], paddings, constant_values=fill[c])
                     for c in range(3)], axis=3)


def portable_patches(x, size_rows, size_cols):
    """tf.image.extract_patches(x, [1, size_rows, size_cols, 1], strides 1, rates 1, 'SAME') as
    a pad and one slice per kernel tap: the same values in the same order (row, column,
    channel), in ops that TFLite has and that tf2onnx converts for any image size."""
    shape = tf.shape(x)
    padded = tf.pad(x, [[0, 0], [(size_rows - 1) // 2, size_rows // 2],
                        [(size_cols - 1) // 2, size_cols // 2], [0, 0]])
    return tf.concat([padded[:, i:i + shape[1], j:j + shape[2], :]
                      for i in range(size_rows) for j in range(size_cols)], axis=3)


def with_portable_patches(graph_def):
    """A copy of graph_def in which each ExtractImagePatches (FCN's fc6 as a matrix product,
    TensorflowUtils.conv2d_as_matmul) is portable_patches under the same name, so that its
    consumers read the same values. TFLite has no such op, and tf2onnx converts it only for a
    fixed batch and size."""
    result = type(graph_def)()
    result.versions.CopyFrom(graph_def.versions)
    result.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        if node.op != "ExtractImagePatches":
            result.node.add().CopyFrom(node)
            continue
        attrs = {name: list(node.attr[name].list.i) for name in ("ksizes", "strides", "rates")}
        if (attrs["strides"] != [1, 1, 1, 1] or attrs["rates"] != [1, 1, 1, 1]
                or node.attr["padding"].s != b"SAME"):
            raise ValueError("%s: only stride 1, rate 1, SAME patches are rewritten" % node.name)
        scratch = tf.Graph()
        with scratch.as_default():
            x = tf.placeholder(tf.as_dtype(node.attr["T"].type), name="x")
            with tf.name_scope(node.name + "_portable"):
                patches = portable_patches(x, attrs["ksizes"][1], attrs["ksizes"][2])
            tf.identity(patches, name=node.name)
        for new in scratch.as_graph_def().node:
            if new.name == x.op.name:
                continue
            inputs = [node.input[0] if name in ("x", "x:0") else name for name in new.input]
            del new.input[:]
            new.input.extend(inputs)
            result.node.add().CopyFrom(new)
    return result


def build_export_graph(settings, classes, checkpoint, image_size=None):
    """(graph, input tensor, {output name: tensor}) of the serving graph: uint8 images in,
    labels and confidence out, around the network as network.build_model builds it to predict
    with the checkpoint's values.

    The network is built in its own graph (build_model makes one), then imported into the
    serving graph with its image placeholder mapped to the padded images (and its keep
    probability, which a graph built for inference no longer reads, to 1, leaving no placeholder
    unfed): so every variant and option of build_model carries over unchanged.
    image_size: (H, W) baked into the input ([1, H, W, 3]), or None for [N, H, W, 3] of any size.
    """
    enabled = tf.resource_variables_enabled()
    tf.enable_resource_variables()  # a TF2 load of reference variables tracks none of them
    try:
        # float32 whatever --precision: a bf16 run's checkpoints hold float32 variables, and
        # TFLite and ONNX runtimes compute float32.
        network_graph, model = network.build_model(settings.replace(precision="fp32"), False,
                                                   classes, weights_from=checkpoint)
    finally:
        if not enabled:
            tf.disable_resource_variables()
    with network_graph.as_default():
        meta_graph = tf.train.export_meta_graph(clear_devices=True)
    meta_graph.graph_def.CopyFrom(with_portable_patches(meta_graph.graph_def))
    mean_pixel = vgg_weights.mean_pixel_for_restore(settings.model_dir)
    shape = [None, None, None, 3] if image_size is None else [1, image_size[0], image_size[1], 3]
    graph = tf.Graph()
    with graph.as_default():
        images = tf.placeholder(tf.uint8, shape, name=INPUT)
        padded = pad_to_multiple(tf.cast(images, tf.float32), tiles.ALIGN, mean_pixel)
        tf.train.import_meta_graph(meta_graph, input_map={
            model.image.name: padded, model.keep_probability.name: tf.constant(1.0)})
        prediction = graph.get_tensor_by_name(model.pred_annotation.name)
        logits = graph.get_tensor_by_name(model.logits.name)
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        labels = tf.cast(prediction[:, :height, :width, 0], tf.int32, name=OUTPUTS[0])
        confidence = tf.identity(tf.reduce_max(tf.nn.softmax(logits), axis=3)[:, :height, :width],
                                 name=OUTPUTS[1])
    return graph, images, dict(zip(OUTPUTS, (labels, confidence)))


def write_class_files(folder, classes):
    """classes.txt (the names, one a line) and classes.json (names, colours, ignore labels, as
    training wrote them) in folder; returns their paths."""
    names_path = os.path.join(folder, CLASS_NAMES_ASSET)
    with open(names_path, "w", encoding="utf-8") as f:
        f.write("".join(name.replace("\n", " ") + "\n" for name in classes.class_names))
    json_path = write_json_atomically(os.path.join(folder, datasets.CLASSES_NAME),
                                      datasets.info_to_json(classes))
    return [names_path, json_path]


def write_saved_model(settings, classes, checkpoint, folder, image_size):
    """The SavedModel of the checkpoint in folder (which must not exist yet)."""
    graph, images, outputs = build_export_graph(settings, classes, checkpoint, image_size)
    with graph.as_default(), tempfile.TemporaryDirectory() as scratch:
        for path in write_class_files(scratch, classes):
            tf.add_to_collection(tf.GraphKeys.ASSET_FILEPATHS, tf.constant(path))
        with tf.Session(config=network.session_config()) as sess:
            checkpoints.restore(sess, checkpoint, tf.global_variables())
            signature = tf.saved_model.signature_def_utils.predict_signature_def(
                inputs={INPUT: images}, outputs=outputs)
            builder = tf.saved_model.builder.SavedModelBuilder(folder)
            builder.add_meta_graph_and_variables(
                sess, [tf.saved_model.tag_constants.SERVING],
                signature_def_map={SIGNATURE: signature},
                assets_collection=tf.get_collection(tf.GraphKeys.ASSET_FILEPATHS),
                strip_default_attrs=True)
            builder.save()


# ---- the converters ----------------------------------------------------------------------------

def convert_tflite(saved_model_dir, path, kind):
    """Converts the SavedModel into a .tflite file: kind 'tflite' float32, 'tflite_fp16' float16
    weights, 'tflite_int8' dynamic-range int8 (int8 weights, activations float)."""
    import tensorflow as tf2
    converter = tf2.lite.TFLiteConverter.from_saved_model(saved_model_dir,
                                                          signature_keys=[SIGNATURE])
    if kind != "tflite":
        converter.optimizations = [tf2.lite.Optimize.DEFAULT]
    if kind == "tflite_fp16":
        converter.target_spec.supported_types = [tf2.float16]
    content = converter.convert()
    with open(path, "wb") as f:
        f.write(content)


def peak_child_memory():
    """The peak resident memory in bytes of the largest child process waited for, or None where
    the OS does not tell (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB on Linux


def convert_onnx(saved_model_dir, path):
    """Converts the SavedModel into an ONNX file with tf2onnx, in a child process with protobuf's
    pure-Python backend. Returns its peak memory in bytes (None when unknown)."""
    command = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", saved_model_dir,
               "--tag", tf.saved_model.tag_constants.SERVING, "--signature_def", SIGNATURE,
               "--opset", str(ONNX_OPSET), "--output", path]
    env = dict(os.environ, **CONVERTER_ENV)
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not os.path.exists(path):
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        why = ("killed by signal %d, most likely for want of memory (docs/deploying.md gives "
               "what it needs)" % -proc.returncode if proc.returncode < 0
               else (lines or ["no output"])[-1].strip())
        raise FCNError("the ONNX conversion (tf2onnx) failed: %s; the other formats are not "
                       "written either, export again" % why)
    return peak_child_memory()


def file_nbytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(folder, name))
               for folder, _, names in os.walk(path) for name in names)


# ---- the mode ----------------------------------------------------------------------------------

def run_export(settings):
    """--mode=export. Returns the manifest (what was written where), also saved as export.json
    in the version folder."""
    formats, image_size = check_export_settings(settings)
    export_dir = export_dir_of(settings)
    checkpoint = checkpoints.checkpoint_to_use(settings.logs_dir, " to export")
    classes = predicting.model_classes(settings)
    model_checks.check_class_count(checkpoint, classes, settings)
    step = checkpoints.saved_step(checkpoint)
    ensure_writable_dir(export_dir, "export_dir")
    version_dir = os.path.join(export_dir, str(step))
    refuse_existing_version(version_dir)
    remove_stale_staging(export_dir)
    staging = temporary_name(version_dir)
    manifest = {"checkpoint": checkpoint, "step": step, "num_classes": classes.num_classes,
                "input": {INPUT: ["uint8", [None, None, None, 3] if image_size is None
                                  else [1, image_size[0], image_size[1], 3]]},
                "outputs": {OUTPUTS[0]: "int32 [N, H, W]", OUTPUTS[1]: "float32 [N, H, W]"},
                "signature": SIGNATURE, "tensorflow": tf.__version__, "files": {}}
    try:
        started = time.time()
        write_saved_model(settings, classes, checkpoint, staging, image_size)
        record(manifest, "saved_model", staging, staging, started)
        for kind in formats:
            if kind == "saved_model":
                continue
            path = os.path.join(staging, FORMAT_FILES[kind])
            started = time.time()
            if kind == "onnx":
                peak = convert_onnx(staging, path)
                manifest["onnx_conversion_peak_bytes"] = peak
            else:
                convert_tflite(staging, path, kind)
            record(manifest, kind, staging, path, started)
        write_json_atomically(os.path.join(staging, MANIFEST_NAME), manifest)
        refuse_existing_version(version_dir)  # another export of this step may have finished
        os.rename(staging, version_dir)
    except BaseException:
        remove_quietly(staging)
        raise
    print("Exported %s (step %d) to %s" % (checkpoint, step, version_dir))
    return dict(manifest, version_dir=version_dir)


def record(manifest, kind, staging, path, started):
    """Notes a written format in the manifest and prints one line for it."""
    seconds, nbytes = time.time() - started, file_nbytes(path)
    name = os.path.relpath(path, staging)
    manifest["files"][kind] = {"path": name, "bytes": nbytes, "seconds": round(seconds, 1)}
    print("%-12s %-16s %s in %.1f s" % (kind, name if name != "." else "(this folder)",
                                        checkpoints.format_size(nbytes), seconds))

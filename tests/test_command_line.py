"""The command line: flags that refuse typos and bad values, help, a quiet start, Ctrl-C, the
device line. Most through the pure parse_command_line and FCN.main in this process; a few as a
user runs them, where fd 2, the exit code or a real signal is the point."""
import os
import signal
import subprocess
import sys

import pytest

import command_line
import devices
import FCN
import guards
import quiet_tensorflow
import run_settings
import training
from guards import FCNError
from tests.project import FCN_PY, SMALL, fcn_main

HANG = 600  # seconds: only against a hang, never an assertion about speed
# Flags of absl.testing, TensorFlow's pfor and its TPU modules, which tf.app.run listed.
FOREIGN_FLAGS = ("test_srcdir", "test_tmpdir", "xml_output_file", "op_conversion_fallback",
                 "tt_check_filter", "delta_threshold", "runtime_oom_exit", "hbm_oom_exit")


def parse(*args):
    try:
        return FCN.parse_command_line(["FCN.py"] + list(args))
    finally:
        FCN.FLAGS.unparse_flags()  # what parsing set must not reach other tests


def refusal(*args):
    """The one-line message parsing or checking these arguments refuses them with."""
    with pytest.raises(FCNError) as caught:
        FCN.check_settings(parse(*args))
    message = str(caught.value)
    assert "\n" not in message
    return message


def run_program(*args, cwd=None):
    proc = subprocess.run([sys.executable, FCN_PY] + list(args), capture_output=True, text=True,
                          timeout=HANG, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


# ---- parsing: pure ------------------------------------------------------------------------------

def test_no_arguments_give_the_defaults_of_the_flag_block():
    settings = parse()
    assert settings.mode == "train" and settings.batch_size == 10
    assert settings.learning_rate == 1e-4 and settings.logs_dir == "logs/"
    assert settings.ignore_label is None and settings.verbose is False


def test_the_settings_are_the_flags_one_for_one():
    assert run_settings.field_names() == list(FCN.FLAGS)


def test_values_in_each_spelling_are_converted_and_the_last_wins():
    settings = parse("--batch_size=4", "--seed", "-3", "--debug", "--noresize", "--verbose=false",
                     "--learning_rate=2e-3", "-image_size=96", "--mode=validate", "--mode=train")
    assert settings.batch_size == 4 and settings.seed == -3
    assert settings.debug is True and settings.resize is False
    assert settings.verbose is False and settings.learning_rate == 0.002
    assert settings.image_size == 96 and settings.mode == "train"


def test_each_parse_starts_from_the_defaults_and_a_refused_one_leaves_them():
    # The flags take the parsed values (the reference API's None arguments read them), and no
    # value of an earlier command line remains.
    try:
        FCN.parse_command_line(["FCN.py", "--batch_size=4", "--debug"])
        assert FCN.FLAGS["batch_size"].value == 4 and FCN.FLAGS["debug"].value is True
        assert FCN.parse_command_line(["FCN.py", "--seed=2"]).batch_size == 10
        with pytest.raises(FCNError):
            FCN.parse_command_line(["FCN.py", "--batch_size=3", "--seed=x"])
        assert FCN.FLAGS["batch_size"].value == 10
    finally:
        FCN.FLAGS.unparse_flags()


@pytest.mark.parametrize("arg, nearest", [
    ("--logsdir=X", "--logs_dir"),
    ("--log_dir=X", "--logs_dir"),  # absl's own logging flag: not taken, and close to ours
    ("--batchsize=2", "--batch_size"),
    ("--bogus_flag=1", None),
    ("--nomode", "--mode"),  # --no is for switches only
])
def test_an_unknown_flag_is_named_with_the_nearest_real_one(arg, nearest):
    message = refusal(arg)
    assert message.startswith("unknown flag %s" % arg)
    if nearest:
        assert "did you mean %s?" % nearest in message
    else:
        assert "did you mean" not in message


def test_a_stray_argument_is_refused():
    assert refusal("train").startswith("unexpected argument 'train'")
    assert "did you mean --mode=train?" in refusal("mode=train")
    assert refusal("--mode=train", "-").startswith("unexpected argument '-'")


@pytest.mark.parametrize("args, message", [
    (["--batch_size=abc"], "--batch_size=abc: it must be a whole number"),
    (["--learning_rate=fast"], "--learning_rate=fast: it must be a number"),
    (["--debug=maybe"], "--debug=maybe: use true or false"),
    (["--batch_size"], "--batch_size needs a value"),
    (["--batch_size", "--seed=1"], "--batch_size needs a value"),
    # absl alone would take the next flag as a string flag's value.
    (["--logs_dir", "--mode=validate"], "--logs_dir needs a value"),
    (["--seed=-1"], "--seed=-1: it must be between 0 and 4294967295"),
    (["--seed=4294967296"], "--seed=4294967296: it must be between 0 and 4294967295"),
    (["--image_size=100000"], "--image_size=100000: at most 4096; memory grows with the pixel"),
    (["--learning_rate=inf"], "--learning_rate=inf: it must be a positive finite number"),
    (["--learning_rate=nan"], "--learning_rate=nan: it must be a positive finite number"),
    (["--learning_rate=0"], "--learning_rate=0: it must be a positive finite number"),
    (["--learning_rate=-1e-4"], "--learning_rate=-0.0001: it must be a positive finite number"),
])
def test_a_wrong_value_is_one_line(args, message):
    assert refusal(*args).startswith(message)


def test_the_largest_values_in_range_pass():
    FCN.check_settings(parse("--seed=4294967295", "--image_size=4096", "--learning_rate=10"))


def test_closest_flag():
    assert command_line.closest_flag("logsdir", ["logs_dir", "data_dir"]) == "logs_dir"
    assert command_line.closest_flag("zzz", ["logs_dir", "data_dir"]) is None


def test_flag_groups_follow_the_block_comments():
    source = "\n".join([
        "# ---- first ----", 'tf.flags.DEFINE_string("a", "", "")',
        'tf.flags.DEFINE_bool("b", False, "")', "# ---- second group ----",
        'tf.flags.DEFINE_integer("c", 1,', '                        "help")',
        "# ---- code, later -------------------------", "x = 1"])
    assert command_line.flag_groups(source) == [("first", ["a", "b"]), ("second group", ["c"])]


@pytest.mark.parametrize("arg", ["-h", "--help", "--helpfull"])
def test_help_lists_this_projects_flags_by_group(arg):
    with pytest.raises(command_line.HelpRequest) as caught:
        parse("--bogus", arg)  # help wins over a mistake
    text = caught.value.args[0]
    assert "  --batch_size  (default: 10)\n      Images per step" in text
    assert "  --debug, --nodebug  (default: off)" in text
    # Grouped as FCN.py's flag block: its headings, in its order.
    headings = [line for line in text.splitlines()
                if line.endswith(":") and not line.startswith(" ")]
    assert headings[:3] == ["what to run:", "folders:", "the data:"]
    for name in run_settings.field_names():
        assert "--%s" % name in text
    # Every flag's help is whole sentences (--init_from's ended mid-sentence).
    for name in FCN.FLAGS:
        assert FCN.FLAGS[name].help.endswith("."), name
    for name in FOREIGN_FLAGS + ("logtostderr", "run_with_pdb"):
        assert name not in text
    assert ("How the command line is read" in text) == (arg == "--helpfull")


# ---- warnings and pieces: pure ------------------------------------------------------------------

def test_slow_cpu_warning_only_for_a_cpu_run_over_a_day():
    line = training.slow_cpu_warning(2 * 86400 + 3 * 3600, [])
    assert line.startswith("Warning: training on the CPU only") and "about 2d03h more" in line
    assert training.slow_cpu_warning(2 * 86400, ["GPU:0 NVIDIA T4"]) is None
    assert training.slow_cpu_warning(23 * 3600, []) is None
    assert training.slow_cpu_warning(float("nan"), []) is None


def test_bf16_warning_only_where_bf16_is_emulated():
    line = devices.bf16_warning("bf16", [], {"avx2", "fma"})
    assert "emulated" in line and "slower than fp32" in line
    assert devices.bf16_warning("bf16", [], {"avx2", "avx512_bf16"}) is None
    assert devices.bf16_warning("bf16", ["GPU:0 NVIDIA T4"], set()) is None
    assert devices.bf16_warning("fp32", [], set()) is None


def test_ctrl_c_exits_with_one_line_and_130(capsys):
    with pytest.raises(SystemExit) as caught:
        with guards.ctrl_c_exits("FCN.py"):
            raise KeyboardInterrupt
    assert caught.value.code == 130
    assert capsys.readouterr().err == "FCN.py: interrupted (Ctrl-C)\n"


def test_held_stderr_keeps_fd_2_and_replays_it_on_failure(capfd):
    with quiet_tensorflow.held_stderr() as held:
        os.write(2, b"E0000 noise from C++\n")
    assert held.text == "E0000 noise from C++\n"
    assert capfd.readouterr().err == ""
    with pytest.raises(ImportError):
        with quiet_tensorflow.held_stderr():
            os.write(2, b"why the import failed\n")
            raise ImportError("no such module")
    assert capfd.readouterr().err == "why the import failed\n"
    del quiet_tensorflow.HELD[:]


# ---- FCN.main in this process -------------------------------------------------------------------

def test_main_refuses_a_bad_value_with_one_line_and_exit_2(capsys, tmp_path):
    code, out, err = fcn_main(capsys, "--batch_size=abc", "--logs_dir=" + str(tmp_path))
    assert code == 2 and out == ""
    assert err == "FCN.py: error: --batch_size=abc: it must be a whole number\n"


def test_main_help_prints_the_flags_and_starts_nothing(capsys, tmp_path):
    code, out, err = fcn_main(capsys, "--help", "--logs_dir=" + str(tmp_path / "logs"))
    assert code == 0 and err == ""
    assert "--batch_size" in out and "Settings:" not in out and "Devices:" not in out
    assert not os.path.exists(tmp_path / "logs")


# ---- as a user runs it --------------------------------------------------------------------------

def test_h_prints_the_flags_and_exits_0_without_training_or_downloading(tmp_path):
    code, out, err = run_program("-h", cwd=str(tmp_path))
    assert code == 0 and err == "", err
    assert "--batch_size" in out and "--logs_dir" in out
    assert "Settings:" not in out and "Downloading" not in out
    assert os.listdir(str(tmp_path)) == []  # no logs/, no Data_zoo/, no Model_zoo/


def test_an_unknown_flag_stops_at_once_with_one_line(tmp_path):
    code, out, err = run_program("--logsdir=" + str(tmp_path / "X"), cwd=str(tmp_path))
    assert code == 2 and out == ""
    # TensorFlow's import wrote to fd 2; none of it shows.
    assert err == ("FCN.py: error: unknown flag --logsdir=%s; did you mean --logs_dir? "
                   "(python FCN.py --help lists the flags)\n" % (tmp_path / "X"))
    assert os.listdir(str(tmp_path)) == []


def test_a_start_shows_the_devices_first_and_no_tensorflow_noise(dirs, tmp_path):
    """--mode=validate on an empty logs folder: exactly one stderr line, the error."""
    import tensorflow as tf
    code, out, err = run_program("--mode=validate", "--logs_dir=" + str(tmp_path), *(SMALL + dirs))
    assert code == 2
    assert err.splitlines() == ["FCN.py: error: no checkpoint in --logs_dir %s; train first "
                                "(--mode=train) or point --logs_dir at a folder with "
                                "model.ckpt-* files" % tmp_path]
    first = out.splitlines()[0]
    if tf.config.list_physical_devices("GPU"):
        assert first.startswith("Devices: GPU:0 ")
    else:
        assert first == "Devices: CPU only (no GPU visible)"


def as_in_a_terminal():
    # A shell starting the suite in the background (`... &`) sets SIGINT to ignored, and the
    # child would inherit that (Python then installs no KeyboardInterrupt): Ctrl-C's default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT, which Windows cannot send")
def test_ctrl_c_before_the_first_step_is_one_line_and_exit_130(dirs, tmp_path):
    logs = str(tmp_path / "logs")
    proc = subprocess.Popen([sys.executable, "-u", FCN_PY, "--mode=train", "--logs_dir=" + logs]
                            + SMALL + dirs, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=as_in_a_terminal)
    try:
        first = proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert first.startswith("Devices: ")
    assert proc.returncode == 130, out[-2000:] + err
    assert err == "FCN.py: interrupted (Ctrl-C)\n"
    assert "step 1 loss" not in out
    assert not os.path.exists(os.path.join(logs, guards.LOCK_NAME))


def test_help_answers_before_tensorflow_is_imported(tmp_path):
    # FCN.py run as a program: --help (and a command line refused) comes before TensorFlow's
    # import, which takes seconds.
    code = ("import runpy, sys\nsys.path.insert(0, %r)\nsys.argv = ['FCN.py', '--help']\n"
            "try:\n    runpy.run_path(%r, run_name='__main__')\nexcept SystemExit as e:\n"
            "    print('exit', e.code)\n"
            "print('tensorflow' in sys.modules)" % (os.path.dirname(FCN_PY), FCN_PY))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=HANG, cwd=str(tmp_path))
    lines = proc.stdout.splitlines()
    assert lines[-2:] == ["exit 0", "False"], proc.stdout[-500:] + proc.stderr[-2000:]
    assert "--batch_size" in proc.stdout


def test_a_run_shows_no_tensorflow_error_lines_unless_verbose(trained, dirs, tmp_path):
    # oneDNN's "E0000 ... supports DT_INT64 only on platforms with AVX-512" and its like.
    image = os.path.join(dirs[0].split("=", 1)[1], "ADEChallengeData2016", "images",
                         "validation", "ADE_val_00000001.jpg")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's
    proc = subprocess.run([sys.executable, FCN_PY, "--mode=predict", "--logs_dir=" + trained[0],
                           "--image=" + image, "--output_dir=" + str(tmp_path)] + SMALL + dirs,
                          capture_output=True, text=True, timeout=HANG, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr == "", proc.stderr[-2000:]

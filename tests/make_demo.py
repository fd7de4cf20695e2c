"""Writes an offline demo: a data_dir with the learnable toy scene dataset (ADEChallengeData2016
layout), a 3-class dataset of your own kind (--dataset=folder) in <out>/mine, and a model_dir
with a synthetic VGG-19 .mat under the real file's name.

    python -m tests.make_demo --out demo
    python FCN.py --mode=train --data_dir=demo/data --model_dir=demo/Model_zoo \\
        --logs_dir=demo/logs --image_size=64 --batch_size=4 --max_iterations=300

The VGG weights are random (He-scaled), not ImageNet's: the demo shows the program working end
to end, not the accuracy of real FCN-8s.
"""
import argparse
import os
import sys

if __package__ in (None, ""):  # run as a file: make `tests` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.make_dataset import make_folder_dataset, make_scene_dataset  # noqa: E402
from tests.make_vgg_mat import vgg19_fc_weights, write_vgg19_mat  # noqa: E402
from vgg_weights import VGG19_FILE_NAME, VGG19_WIDTHS  # noqa: E402


def write_paper_model_dir(out, seed=0, widths=VGG19_WIDTHS):
    """<out>/Model_zoo_paper: the same synthetic VGG-19 with fc6 and fc7, which --variant=paper
    loads; at the real widths (its size and time to write: docs/testing.md), or others."""
    model_dir = os.path.join(out, "Model_zoo_paper")
    os.makedirs(model_dir, exist_ok=True)
    write_vgg19_mat(os.path.join(model_dir, VGG19_FILE_NAME), seed=seed,
                    fc_weights=vgg19_fc_weights(seed, widths=widths), widths=widths)
    return model_dir


def write_demo(out, n_train=200, n_val=40, seed=0):
    """Returns (data_dir, model_dir, folder_data_dir) written under out."""
    data_dir, model_dir = os.path.join(out, "data"), os.path.join(out, "Model_zoo")
    folder_dir = os.path.join(out, "mine")
    os.makedirs(model_dir, exist_ok=True)
    make_scene_dataset(data_dir, n_train=n_train, n_val=n_val, seed=seed)
    make_folder_dataset(folder_dir, n_train=n_train, n_val=n_val, seed=seed)
    write_vgg19_mat(os.path.join(model_dir, VGG19_FILE_NAME), seed=seed)
    return data_dir, model_dir, folder_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo", help="folder to write into (default: demo)")
    parser.add_argument("--train", type=int, default=200, help="training images (default 200)")
    parser.add_argument("--val", type=int, default=40, help="validation images (default 40)")
    parser.add_argument("--paper", action="store_true",
                        help="also write <out>/Model_zoo_paper, a .mat for --variant=paper")
    args = parser.parse_args(argv)
    data_dir, model_dir, folder_dir = write_demo(args.out, args.train, args.val)
    print("data_dir  %s (--dataset=ade20k)\nmine      %s (--dataset=folder)\nmodel_dir %s"
          % (data_dir, folder_dir, model_dir))
    if args.paper:
        print("model_dir %s (--variant=paper)" % write_paper_model_dir(args.out))


if __name__ == "__main__":
    main()

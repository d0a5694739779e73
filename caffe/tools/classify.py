"""``caffe classify``: pycaffe's ``python/classify.py`` as a command.

``caffe classify INPUT OUTPUT.npy --model_def deploy.prototxt --pretrained_model w.caffemodel``
classifies one image, every ``*.EXT`` image of a folder (sorted by name), or the images of an
``.npy`` array (``N x H x W x K``, values as ``caffe.io.load_image`` gives: [0, 1]; image
files are read in colour, or grey for a net with one input channel) with
``caffe.Classifier``: each image is resized to ``--images_dim``, then scored on ten crops
(averaged) or, with ``--center_only``, the centre crop. The scores (``N x classes``) are saved
with ``numpy.save``. Preprocessing as in pycaffe: ``--raw_scale`` (255),
``--channel_swap`` (``2,1,0``: RGB to BGR, for a net with three input channels),
``--mean_file`` (``K x H x W`` as ``.npy`` or ``.binaryproto``, averaged to one value per
channel; pycaffe's default is the ImageNet mean it ships, which we do not, so there is no mean
unless one is given), ``--input_scale``. ``--print_results`` with ``--labels_file`` (one label
per line, Caffe's ``synset_words.txt``) prints the top five of each image.
"""

from __future__ import annotations

import argparse
import glob
import os
import time

import numpy as np

from caffe import io
from caffe._common import set_mode_cpu, set_mode_gpu
from caffe.classifier import Classifier
from caffe.data.transformer import load_mean_file
from caffe.errors import CaffeError, FileFormatError

COMMAND = "classify"
HELP = "classify images with a trained net and save the scores as .npy (pycaffe's classify.py)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input_file", help="an image, a folder of images, or an .npy array")
    parser.add_argument("output_file", help="the .npy file for the scores")
    parser.add_argument("--model_def", required=True, help="the deploy net (prototxt)")
    parser.add_argument("--pretrained_model", required=True,
                        help="the trained weights (caffemodel/HDF5)")
    parser.add_argument("--gpu", action="store_true", help="compute on GPU 0")
    parser.add_argument("--center_only", action="store_true",
                        help="score the centre crop only instead of averaging ten crops")
    parser.add_argument("--images_dim", default="256,256",
                        help="'height,width' the images are resized to before cropping")
    parser.add_argument("--mean_file", default="",
                        help="the data set's mean image (.npy or .binaryproto, K x H x W)")
    parser.add_argument("--input_scale", type=float, default=None,
                        help="multiply the preprocessed input by this")
    parser.add_argument("--raw_scale", type=float, default=255.0,
                        help="multiply the [0, 1] images by this first (default 255)")
    parser.add_argument("--channel_swap", default=None,
                        help="the order of the input channels (default 2,1,0, RGB -> BGR, "
                        "for nets with 3 input channels; '' for none)")
    parser.add_argument("--ext", default="jpg", help="the image extension read from a folder")
    parser.add_argument("--labels_file", default="",
                        help="one label per line, for --print_results")
    parser.add_argument("--print_results", action="store_true",
                        help="print each image's five best labels")


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise CaffeError(f"{flag} takes comma-separated integers, got '{text}'") from None


def _load_npy(path: str, what: str) -> np.ndarray:
    """An .npy array (never a pickled object), or an error naming ``what`` and ``path``."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise FileFormatError(f"{what} '{path}': {e}") from None


def _mean(path: str) -> np.ndarray:
    """The per-channel mean of a ``K x H x W`` mean image."""
    if path.endswith(".npy"):
        arr = _load_npy(path, "mean file")
        if arr.ndim == 4 and arr.shape[0] == 1:
            arr = arr[0]
    else:
        arr = load_mean_file(path)
    if arr.ndim != 3:
        raise FileFormatError(f"mean file '{path}' holds an array of shape {arr.shape}; a "
                              "mean image has shape (channels, height, width)")
    return arr.reshape(arr.shape[0], -1).mean(1)


def _inputs(path: str, ext: str, color: bool) -> list[np.ndarray] | np.ndarray:
    if path.endswith(".npy"):
        arr = _load_npy(path, "input file")
        if arr.ndim != 4:
            raise FileFormatError(f"input file '{path}' holds an array of shape {arr.shape}; "
                                  "expected N x height x width x channels images")
        return arr
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(glob.escape(path), "*." + ext)))
        if not files:
            raise CaffeError(f"no '*.{ext}' images in the folder '{path}' (--ext chooses the "
                             "extension)")
        return [io.load_image(f, color) for f in files]
    return [io.load_image(path, color)]


def _labels(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise CaffeError(f"cannot read the labels file '{path}': {e.strerror}") from None


def run(args: argparse.Namespace) -> int:
    dims = _ints(args.images_dim, "--images_dim")
    if len(dims) != 2 or min(dims) < 1:
        raise CaffeError(f"--images_dim takes 'height,width', got '{args.images_dim}'")
    mean = _mean(args.mean_file) if args.mean_file else None
    labels = _labels(args.labels_file) if args.print_results and args.labels_file else None
    if args.gpu:
        set_mode_gpu()
    else:
        set_mode_cpu()
    print("GPU mode" if args.gpu else "CPU mode")
    classifier = Classifier(args.model_def, args.pretrained_model, image_dims=dims, mean=mean,
                            input_scale=args.input_scale, raw_scale=args.raw_scale)
    in_ = classifier.inputs[0]
    channels = classifier.blobs[in_].shape[1]
    swap = args.channel_swap if args.channel_swap is not None else (
        "2,1,0" if channels == 3 else "")
    if swap:
        order = _ints(swap, "--channel_swap")
        if sorted(order) != list(range(channels)):
            raise CaffeError(f"--channel_swap {swap}: the net's input '{in_}' has {channels} "
                             f"channels, so the order must be a permutation of 0..{channels - 1}"
                             " ('' for none)")
        classifier.transformer.set_channel_swap(in_, order)
    print(f"Loading {args.input_file}")
    inputs = _inputs(os.path.expanduser(args.input_file), args.ext, channels != 1)
    print(f"Classifying {len(inputs)} inputs.")
    start = time.time()
    predictions = classifier.predict(inputs, not args.center_only)
    print(f"Done in {time.time() - start:.2f} s.")
    if args.print_results:
        for i, scores in enumerate(predictions):
            best = np.argsort(-scores, kind="stable")[:5]
            names = [labels[k] if labels and k < len(labels) else str(k) for k in best]
            print(f"{i}: " + ", ".join(f"{n} ({scores[k]:.5f})" for n, k in zip(names, best)))
    print(f"Saving results into {args.output_file}")
    np.save(args.output_file, predictions)
    return 0

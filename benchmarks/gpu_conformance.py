"""Run the BVLC conformance cases in GPU mode.

    python benchmarks/gpu_conformance.py PATH/TO/conformance [check.py options]

The checker (``check.py`` beside the cases) puts the implementation in CPU mode before it
starts; this wrapper makes that call select the GPU instead, then runs the checker unchanged.
"""

from __future__ import annotations

import os
import runpy
import sys

import caffe


def main() -> None:
    root = sys.argv[1] if len(sys.argv) > 1 else ".conformance"
    caffe.set_mode_gpu()
    caffe.set_mode_cpu = caffe.set_mode_gpu  # what check.py calls before running the cases
    sys.argv = [os.path.join(root, "check.py"), *sys.argv[2:]]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()

"""``python -m caffe``: the ``caffe`` command line."""

import sys

from caffe.tools.cli import main

sys.exit(main())

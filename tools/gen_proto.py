#!/usr/bin/env python3
"""Regenerate caffe/proto/caffe_pb2.py from caffe/proto/caffe.proto.

Usage: python tools/gen_proto.py [OUT_DIR]

Runs, from the repository root,
    python -m grpc_tools.protoc -I caffe/proto --python_out=OUT_DIR caffe/proto/caffe.proto
with OUT_DIR defaulting to caffe/proto.  Exits non-zero if protoc fails.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_DIR = os.path.join("caffe", "proto")
PROTO_FILE = os.path.join(PROTO_DIR, "caffe.proto")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) > 1 or (argv and argv[0] in ("-h", "--help")):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    out_dir = os.path.abspath(argv[0]) if argv else os.path.join(ROOT, PROTO_DIR)
    os.makedirs(out_dir, exist_ok=True)
    cmd = [sys.executable, "-m", "grpc_tools.protoc", "-I", PROTO_DIR,
           "--python_out=" + out_dir, PROTO_FILE]
    try:
        rc = subprocess.call(cmd, cwd=ROOT)
    except OSError as exc:
        print(f"gen_proto: cannot run protoc: {exc}", file=sys.stderr)
        return 1
    if rc != 0:
        print(f"gen_proto: protoc failed with exit code {rc}", file=sys.stderr)
        return rc if rc > 0 else 1
    print(f"gen_proto: wrote {os.path.join(out_dir, 'caffe_pb2.py')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m benchmarks COMMAND``: the neocaffe benchmark suite.

    python -m benchmarks run [--quick] [--device cpu|cuda] [--threads 1,2] [--only NETS]
    python -m benchmarks run --memory-only [--only NETS]
    python -m benchmarks memory [--net resnet50 --batch 8 --mode solver]
    python -m benchmarks profile --net resnet50 --batch 8 --mode fwdbwd
    python -m benchmarks executor [--layers 100 --threads 1]
    python -m benchmarks report results/cpu-quick.json

See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time

import torch

from benchmarks import checks, report, suite

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _threads(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t]


def cmd_run(args: argparse.Namespace) -> int:
    settings = suite.Settings(threads=_threads(args.threads), device=args.device,
                              memory=not args.no_memory, opencv=not args.no_opencv,
                              cuda_graph=args.cuda_graph)
    if args.memory_only:
        settings.timing = settings.opencv = False
        settings.memory = True
        args.no_caffe_time = args.no_executor = True
    if args.quick:
        settings.repeats, settings.heavy_repeats = 5, 3
        settings.warmup, settings.heavy_warmup = 1, 0
        settings.sample_s = 0.1
    if args.repeats:
        settings.repeats = settings.heavy_repeats = args.repeats
    if args.sample_s is not None:
        settings.sample_s = args.sample_s
    cases = suite.select(suite.default_cases(), args.only)
    if args.memory_only:
        cases = [c for c in cases if c.mode != "fwdbwd"]
    if args.batch:
        cases = list(dict.fromkeys(suite.Case(c.net, args.batch, c.mode) for c in cases))
    if not cases:
        print(f"no case matches --only {args.only!r}", file=sys.stderr)
        return 2
    kind = "memory" if args.memory_only else "quick" if args.quick else "full"
    tag = args.tag or f"{args.device}-{kind}"
    results: dict = {
        "tag": tag, "command": "python -m benchmarks " + shlex.join(sys.argv[1:]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {**report.machine(args.device), "malloc": report.host_allocator(args.malloc)},
        "code": report.code_state(),
        "note": args.note,
        "settings": vars(settings), "targets": {"time": suite.TARGETS,
                                                "memory": suite.MEMORY_TARGET},
        "method": report.METHOD.format(tol=suite.TOLERANCE, lr=suite.SOLVER_SETTINGS["base_lr"],
                                       mom=suite.SOLVER_SETTINGS["momentum"],
                                       wd=suite.SOLVER_SETTINGS["weight_decay"]),
        "cases": [],
    }
    t0 = time.perf_counter()
    failed = 0
    for case in cases:
        rec = suite.run_case(case, settings)
        failed += not rec["check"]["ok"]
        results["cases"].append(rec)
    if not args.no_caffe_time:
        iters = 3 if args.quick else 10
        results["caffe_time"] = []
        for net, batch in (("lenet", 64), ("cifar10_quick", 100)):
            if suite.select([suite.Case(net, batch, "fwdbwd")], args.only):
                results["caffe_time"].append(checks.caffe_time(net, batch, iters, args.device))
    if not args.no_executor and args.device == "cpu":
        results["executor_overhead"] = [
            checks.executor(n, repeats=5 if args.quick else 15) for n in settings.threads]
    results["wall_s"] = time.perf_counter() - t0
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, tag)
    report.write_json(base + ".json", results)
    with open(base + ".md", "w") as f:
        f.write(report.markdown(results))
    print(f"wrote {base}.md and {base}.json ({results['wall_s']:.0f} s)")
    if failed:
        print(f"{failed} case(s) disagree with their twin", file=sys.stderr)
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    """Render a results JSON as Markdown again (next to it, same name)."""
    with open(args.json) as f:
        results = json.load(f)
    path = os.path.splitext(args.json)[0] + ".md"
    with open(path, "w") as f:
        f.write(report.markdown(results))
    print(f"wrote {path}")
    return 0


def cmd_memory(args: argparse.Namespace) -> int:
    """Peak memory of both sides and the bytes neocaffe holds per blob class."""
    settings = suite.Settings(threads=[torch.get_num_threads()], device=args.device,
                              repeats=1, heavy_repeats=1, warmup=0, heavy_warmup=0,
                              opencv=False, sample_s=0.0, max_inner=1)
    rec = suite.run_case(suite.Case(args.net, args.batch, args.mode), settings,
                         log=lambda s: None)
    mem = rec["memory"]
    print(f"{args.net} b{args.batch} {args.mode}: peak neocaffe "
          f"{mem['neocaffe_bytes'] / 2**20:.1f} MiB, twin {mem['twin_bytes'] / 2**20:.1f} MiB "
          f"(ratio {mem['ratio']:.2f})")
    print("bytes neocaffe holds by blob class (MiB): built, before the first call / after "
          "the measured call")
    before, after = mem["neocaffe_held_before_by_class"], mem["neocaffe_held_by_class"]
    for cls in dict.fromkeys([*before, *after]):
        b, a = before.get(cls, {}), after.get(cls, {})
        print(f"  {cls:40s} {b.get('bytes', 0) / 2**20:10.2f} / {a.get('bytes', 0) / 2**20:10.2f}"
              f"   ({b.get('storages', 0)} / {a.get('storages', 0)} storages)")
    for m in mem["in_place_moved"]:
        kept = ", keeping the old one for its backward" if m.get("kept_for_backward") else ""
        print(f"  in-place layer {m['layer']} ({m['type']}) allocates a new top "
              f"({m['bytes'] / 2**20:.2f} MiB) every forward{kept}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    """torch.profiler tables of both sides, and the Python functions neocaffe spends its own
    time in (cProfile, sorted by internal time)."""
    import cProfile
    import pstats

    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(args.threads)
    case = suite.Case(args.net, args.batch, args.mode)
    device = suite.Device(args.device)
    param, ref, inputs = suite.build_case(case, device)
    sides = {"neocaffe": suite.CaffeSide(case, param, ref, inputs),
             "twin": suite.TwinSide(case, param, ref, inputs, device.torch)}
    for name, side in sides.items():
        side.run()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.iterations):
                side.run()
        print(f"==== {name}: {case.label}, {args.iterations} call(s), {args.threads} thread(s)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(args.iterations):
        sides["neocaffe"].run()
    pr.disable()
    print("==== neocaffe Python profile (tottime)")
    pstats.Stats(pr).sort_stats("tottime").print_stats(args.rows)
    return 0


def cmd_executor(args: argparse.Namespace, rest: list[str]) -> int:
    from benchmarks import executor_overhead

    executor_overhead.main(rest)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="the suite: check, time and measure every case")
    run.add_argument("--quick", action="store_true", help="few repeats (a few minutes)")
    run.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    run.add_argument("--threads", default="1,2", help="torch thread counts, e.g. 1,2")
    run.add_argument("--only", help="comma-separated net[:mode[:batch]] filters, e.g. "
                                    "'lenet,resnet50:forward'")
    run.add_argument("--repeats", type=int, help="samples per side (overrides --quick)")
    run.add_argument("--batch", type=int, help="run every selected case at this batch size")
    run.add_argument("--sample-s", type=float, help="seconds per timed sample, at least")
    run.add_argument("--out", default=RESULTS, help="folder for the .md and .json results")
    run.add_argument("--tag", help="results file name (default DEVICE-quick or DEVICE-full)")
    run.add_argument("--note", default="", help="a remark for the results' machine section")
    run.add_argument("--cuda-graph", action="store_true",
                     help="neocaffe replays its passes as CUDA graphs (Net.use_cuda_graph)")
    report.add_malloc_argument(run)
    run.add_argument("--no-memory", action="store_true")
    run.add_argument("--memory-only", action="store_true",
                     help="check and measure peak memory only (no timing; forward, batch-1 and "
                          "solver cases) -> results/DEVICE-memory.{md,json}")
    run.add_argument("--no-opencv", action="store_true")
    run.add_argument("--no-caffe-time", action="store_true")
    run.add_argument("--no-executor", action="store_true")
    run.set_defaults(fn=cmd_run)

    rep = sub.add_parser("report", help="render a results JSON as Markdown again")
    rep.add_argument("json", help="a results .json written by run")
    rep.set_defaults(fn=cmd_report)

    mem = sub.add_parser("memory", help="peak memory and bytes held per blob class")
    mem.add_argument("--net", default="resnet50", choices=sorted(suite.netdefs.NETS))
    mem.add_argument("--batch", type=int, default=8)
    mem.add_argument("--mode", default="solver", choices=("forward", "solver", "infer_b1"))
    mem.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    mem.set_defaults(fn=cmd_memory)

    prof = sub.add_parser("profile", help="where the time goes, both sides")
    prof.add_argument("--net", default="resnet50", choices=sorted(suite.netdefs.NETS))
    prof.add_argument("--batch", type=int, default=8)
    prof.add_argument("--mode", default="fwdbwd", choices=tuple(suite.TARGETS))
    prof.add_argument("--threads", type=int, default=1)
    prof.add_argument("--iterations", type=int, default=3)
    prof.add_argument("--rows", type=int, default=25)
    prof.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    prof.set_defaults(fn=cmd_profile)

    sub.add_parser("executor", help="the executor-overhead chain benchmark; takes its own "
                   "arguments (--layers, --threads, --repeats, --json)")
    args, rest = ap.parse_known_args(argv)
    if args.command == "executor":
        return cmd_executor(args, rest)
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())

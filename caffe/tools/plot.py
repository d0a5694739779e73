"""``caffe plot``: draw the training and test curves of training logs as a PNG.

``caffe plot train.log -o curves.png`` reads a log written by ``caffe train`` (neocaffe's or
BVLC Caffe's; ``caffe.tools.training_log`` says which lines) and draws up to three panels
against the iteration: the losses (smoothed training loss and test loss outputs), the other
outputs (accuracy ...), and the learning rate.

``caffe plot CHART out.png a.log [b.log ...]`` draws one chart of Caffe's
``tools/extra/plot_training_log.py``, one curve per log: 0 test accuracy (the test net's
output #0), 2 test loss (its output #1), 4 the learning rate, 6 the training loss, each
against the iterations, or with the next odd number against the seconds since the ``Solving``
line. Drawn with Pillow.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field

from caffe.errors import CaffeError
from caffe.tools.training_log import scan, seconds_since, training_start

COMMAND = "plot"
HELP = "draw training and test curves from a training log as a PNG"

COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


@dataclass
class Panel:
    title: str
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def add(self, name: str, x: float, value: float) -> None:
        if math.isfinite(value) and math.isfinite(x):
            self.series.setdefault(name, []).append((x, value))


def parse_log(lines) -> list[Panel]:
    """The curves of a training log: panels 'loss', 'outputs' and 'learning rate' (only the
    ones with data)."""
    loss, outputs, lr = Panel("loss"), Panel("outputs"), Panel("learning rate")
    for v in scan(lines):
        if v.kind == "loss":
            loss.add("train loss", v.iteration, v.value)
        elif v.kind == "lr":
            lr.add("lr", v.iteration, v.value)
        elif v.kind == "test":
            label = f"test {v.name}" if v.test_net == 0 else f"test#{v.test_net} {v.name}"
            (loss if v.is_loss else outputs).add(label, v.iteration, v.value)
        elif not v.is_loss:
            outputs.add(f"train {v.name}", v.iteration, v.value)
    return [p for p in (loss, outputs, lr) if p.series]


#: plot_training_log.py's even chart types: (y axis, kind of value, test output number)
CHARTS = {0: ("Test accuracy", "test", 0), 2: ("Test loss", "test", 1),
          4: ("Train learning rate", "lr", None), 6: ("Train loss", "loss", None)}


def chart(chart_type: int, logs: dict[str, list[str]]) -> Panel:
    """One chart of plot_training_log.py (see the module text): a curve per log, named by
    the log's file name without ``.log``."""
    y_name, kind, output = CHARTS[chart_type - chart_type % 2]
    by_seconds = chart_type % 2 == 1
    panel = Panel(f"{y_name} vs. {'Seconds' if by_seconds else 'Iters'}")
    for path, lines in logs.items():
        label = os.path.basename(path).removesuffix(".log")
        values = [v for v in scan(lines) if v.kind == kind
                  and (output is None or (v.output == output and v.test_net == 0))]
        xs: list[float] = [float(v.iteration) for v in values]
        if by_seconds:
            _, start = training_start(lines)
            xs = (list(seconds_since(start, [v.time for v in values])) if start is not None
                  else [])
        for x, v in zip(xs, values):
            panel.add(label, x, v.value)
    return panel


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [lo, hi]."""
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    k = 0
    while not ticks or ticks[-1] < hi - 1e-12 * step:
        ticks.append(first + k * step)
        k += 1
    return ticks


def _label(v: float) -> str:
    return f"{v:.4g}"


def draw(panels: list[Panel], path: str, width: int = 900, panel_height: int = 300,
         x_label: str = "iteration") -> None:
    """Write the panels, one under the other, as a PNG."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        font = ImageFont.load_default()
    image = Image.new("RGB", (width, panel_height * len(panels)), "white")
    canvas = ImageDraw.Draw(image)
    points = [p for panel in panels for s in panel.series.values() for p in s]
    x_ticks = nice_ticks(min(x for x, _ in points), max(x for x, _ in points), 8)
    x0, x1 = x_ticks[0], x_ticks[-1]
    left, right, top, bottom = 80, 20, 30, 40
    for k, panel in enumerate(panels):
        oy = k * panel_height
        box = (left, oy + top, width - right, oy + panel_height - bottom)
        values = [v for s in panel.series.values() for _, v in s]
        y_ticks = nice_ticks(min(values), max(values))
        y0, y1 = y_ticks[0], y_ticks[-1]

        def xy(x: float, y: float, box=box, y0=y0, y1=y1) -> tuple[float, float]:
            return (box[0] + (x - x0) / (x1 - x0) * (box[2] - box[0]),
                    box[3] - (y - y0) / (y1 - y0) * (box[3] - box[1]))

        for t in x_ticks:
            px = xy(t, y0)[0]
            canvas.line([(px, box[1]), (px, box[3])], fill=(230, 230, 230))
            canvas.text((px, box[3] + 6), _label(t), fill="black", font=font, anchor="ma")
        for t in y_ticks:
            py = xy(x0, t)[1]
            canvas.line([(box[0], py), (box[2], py)], fill=(230, 230, 230))
            canvas.text((box[0] - 6, py), _label(t), fill="black", font=font, anchor="rm")
        canvas.rectangle(box, outline="black")
        canvas.text(((box[0] + box[2]) / 2, oy + 8), panel.title, fill="black", font=font,
                    anchor="ma")
        canvas.text((box[2], box[3] + 22), x_label, fill=(90, 90, 90), font=font,
                    anchor="ra")
        named = sorted(panel.series.items())
        for j, (_, series) in enumerate(named):
            color = COLORS[j % len(COLORS)]
            pts = [xy(x, y) for x, y in sorted(series)]
            if len(pts) > 1:
                canvas.line(pts, fill=color, width=2)
            if len(pts) <= 60:
                for px, py in pts:
                    canvas.ellipse((px - 3, py - 3, px + 3, py + 3), fill=color)
        canvas.rectangle((box[2] - 158, box[1] + 2, box[2] - 4, box[1] + 14 + 18 * len(named)),
                         fill="white", outline=(180, 180, 180))
        for j, (name, _) in enumerate(named):
            color = COLORS[j % len(COLORS)]
            ly = box[1] + 14 + 18 * j
            canvas.line([(box[2] - 150, ly), (box[2] - 125, ly)], fill=color, width=3)
            canvas.text((box[2] - 118, ly), name, fill="black", font=font, anchor="lm")
    image.save(path, format="PNG")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs="+", metavar="LOG | CHART OUT.png LOG",
                        help="a training log (the stderr of caffe train); or, as Caffe's "
                        "plot_training_log.py, a chart type 0-7, the PNG to write and logs")
    parser.add_argument("-o", "--output", default="",
                        help="the PNG file to write (default: the log's name + .png)")
    parser.add_argument("--width", type=int, default=900, help="image width in pixels")


def _read(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readlines()
    except OSError as e:
        raise CaffeError(f"cannot read the log '{path}': {e.strerror}") from None


def run(args: argparse.Namespace) -> int:
    if len(args.args) >= 3 and args.args[0].isdigit():
        return _run_chart(args)
    if len(args.args) != 1:
        raise CaffeError("caffe plot takes one log (caffe plot train.log [-o out.png]) or a "
                         "chart type, a PNG and logs (caffe plot 6 loss.png train.log)")
    log = args.args[0]
    panels = parse_log(_read(log))
    if not panels:
        raise CaffeError(f"no training or test values found in '{log}': expected lines "
                         "such as 'Iteration 100, loss = 0.3' or 'Test net output #0: "
                         "accuracy = 0.9'")
    output = args.output or os.path.splitext(log)[0] + ".png"
    draw(panels, output, width=max(args.width, 300))
    names = ", ".join(n for p in panels for n in sorted(p.series))
    print(f"Wrote {output} ({names})")
    return 0


def _run_chart(args: argparse.Namespace) -> int:
    chart_type, output, logs = int(args.args[0]), args.args[1], args.args[2:]
    if chart_type > 7:
        raise CaffeError(f"chart type {chart_type} is not one of 0-7: " + ", ".join(
            f"{k + s}: {y} vs. {x}" for k, (y, _, _) in CHARTS.items()
            for s, x in ((0, "Iters"), (1, "Seconds"))))
    panel = chart(chart_type, {log: _read(log) for log in logs})
    if not panel.series:
        raise CaffeError(f"no values for '{panel.title}' in {', '.join(logs)}")
    draw([panel], output, width=max(args.width, 300),
         x_label="Seconds" if chart_type % 2 else "Iters")
    print(f"Wrote {output} ({panel.title}: {', '.join(sorted(panel.series))})")
    return 0

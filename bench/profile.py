"""py-spy on the running server, and the top costs read back out of its flame graph.

The flame graph (SVG) is for people; the summary (where CPU time went, by function) is printed
and written beside it so a missed target comes with its explanation. The summary is computed
from the frame widths py-spy stores in the SVG (``fg:x``/``fg:w`` are sample counts).
"""

import html
import re
import shutil
import subprocess
import sys
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

RATE_HZ = 100
FRAME = re.compile(
    r'<title>(?P<title>[^<]*)</title><rect [^>]*?y="(?P<y>[\d.]+)"'
    r'[^>]*?fg:x="(?P<x>\d+)" fg:w="(?P<w>\d+)"'
)
SAMPLES_SUFFIX = re.compile(r" \([\d,]+ samples?, [\d.]+%\)$")


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("bench: py-spy is missing; install the dev extra: pip install -e '.[dev]'")
    return found


def start(pid: int, seconds: int, svg: Path, *, native: bool) -> "subprocess.Popen[bytes]":
    command = [
        py_spy(),
        "record",
        "--pid",
        str(pid),
        "--subprocesses",
        "--nolineno",
        # Only samples holding the GIL: Python's own CPU time. Idle threads (anyio's pool waiting
        # on a condition, the loop in epoll) would otherwise show up as busy on some kernels.
        "--gil",
        "--rate",
        str(RATE_HZ),
        "--duration",
        str(seconds),
        "--format",
        "flamegraph",
        "--output",
        str(svg),
    ]
    if native:
        command.append("--native")
    log = svg.with_suffix(".log").open("wb")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


@dataclass
class _Frame:
    name: str
    depth: int
    x: int
    width: int
    children_width: int = 0
    ancestors: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Summary:
    total_samples: int
    by_package: list[tuple[str, int]]
    by_self: list[tuple[str, int]]
    by_total: list[tuple[str, int]]  # Docnum's own functions (app/), below the entry point

    def lines(self, top: int = 12) -> list[str]:
        def share(samples: int) -> str:
            return f"{100 * samples / self.total_samples:5.1f}%"

        out = [f"{self.total_samples} samples of Python holding the GIL"]
        out.append("own time by package (app is Docnum; the rest are libraries and stdlib):")
        out += [f"  {share(n)}  {name}" for name, n in self.by_package[:top]]
        out.append("top functions by own time (the function itself, not what it calls):")
        out += [f"  {share(n)}  {name}" for name, n in self.by_self[:top]]
        out.append("Docnum's functions by total time (the function and everything it calls):")
        out += [f"  {share(n)}  {name}" for name, n in self.by_total[:top]]
        return out


def _frames(svg_text: str) -> list[_Frame]:
    raw = [
        (SAMPLES_SUFFIX.sub("", html.unescape(m["title"])), float(m["y"]), int(m["x"]), int(m["w"]))
        for m in FRAME.finditer(svg_text)
    ]
    if not raw:
        return []
    root_y = next(y for name, y, _, _ in raw if name == "all")
    # Depth is distance from the root row, whichever way up the graph is drawn.
    rows = sorted({y for _, y, _, _ in raw}, key=lambda y: abs(y - root_y))
    depth_of = {y: index for index, y in enumerate(rows)}
    return [_Frame(name, depth_of[y], x, w) for name, y, x, w in raw]


def summarize(svg: Path) -> Summary:
    frames = _frames(svg.read_text())
    if not frames:
        return Summary(0, [], [], [])
    by_depth: dict[int, list[_Frame]] = defaultdict(list)
    for frame in frames:
        by_depth[frame.depth].append(frame)
    for row in by_depth.values():
        row.sort(key=lambda f: f.x)
    for depth in sorted(by_depth)[1:]:
        parents = by_depth[depth - 1]
        starts = [p.x for p in parents]
        for frame in by_depth[depth]:
            parent = parents[bisect_right(starts, frame.x) - 1]
            parent.children_width += frame.width
            frame.ancestors = parent.ancestors | {parent.name}
    own: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for frame in frames:
        if frame.depth == 0 or frame.name.startswith(("process ", "thread ")):
            continue
        own[frame.name] += frame.width - frame.children_width
        if frame.name not in frame.ancestors:  # recursion counts once
            total[frame.name] += frame.width
    root = by_depth[0][0].width
    packages: dict[str, int] = defaultdict(int)
    for name, samples in own.items():
        packages[_package(name)] += samples
    return Summary(
        root,
        _ranked(packages.items()),
        _ranked(own.items()),
        # Frames on every stack (the entry point down to the server loop) say nothing.
        _ranked((name, n) for name, n in total.items() if "(app/" in name and n < root),
    )


def _package(frame: str) -> str:
    """``send (uvicorn/protocols/http/h11_impl.py)`` -> ``uvicorn``; ``wait (threading.py)`` ->
    ``threading``."""
    where = frame.rsplit(" (", 1)[-1].rstrip(")")
    return where.split("/", 1)[0].removesuffix(".py")


def _ranked(items: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    return sorted(items, key=lambda item: -item[1])

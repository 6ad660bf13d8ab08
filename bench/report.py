"""From runs to the table, the ratios to the references, the targets, results.md and the plot."""

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.load import Measured


@dataclass(frozen=True)
class Row:
    """One measured point: a scenario at one worker count and one number of connections."""

    scenario: str
    kind: str  # "docnum", "reference", "peer" or "pgbench"
    workers: int | None  # None for pgbench, which talks to PostgreSQL directly
    connections: int
    numbers_per_request: int
    measured: Measured
    rss_mb: float | None = None
    server_cpu: float | None = None  # percent of one core, whole server process tree
    postgres_cpu: float | None = None  # percent of one core, all PostgreSQL processes
    reference: str | None = None  # the reference scenario this one is compared with
    note: str = ""
    served_p99_ms: float | None = None  # Docnum's own p99, from its access log (load.py)

    @property
    def per_second(self) -> float:
        return self.measured.per_second

    @property
    def numbers_per_second(self) -> float:
        return self.per_second * self.numbers_per_request


def find(rows: list[Row], scenario: str, workers: int | None, connections: int) -> Row | None:
    for row in rows:
        if (row.scenario, row.workers, row.connections) == (scenario, workers, connections):
            return row
    return None


def ratio(rows: list[Row], row: Row) -> float | None:
    if row.reference is None:
        return None
    base = find(rows, row.reference, row.workers, row.connections)
    if base is None or base.per_second == 0:
        return None
    return row.per_second / base.per_second


# The peers (bench/peers) and Docnum's goals against the forum's select_for_update pattern.
PEERS = ("select_for_update", "django-sequences", "trigger")
SELECT_FOR_UPDATE = "select_for_update"
PEER_GOALS = (("gapless", 5.0), ("cached", 12.0))


def peer_ratio(rows: list[Row], scenario: str, workers: int, peer: str, top: int) -> float | None:
    """Docnum's req/s for ``scenario`` at ``workers`` over the peer's, both at ``top``
    connections (the peer with the workers it runs with)."""
    mine = find(rows, scenario, workers, top)
    theirs = next(
        (r for r in rows if r.scenario == peer and r.connections == top and r.kind == "peer"), None
    )
    if mine is None or theirs is None or not mine.measured.requests or theirs.per_second == 0:
        return None
    return mine.per_second / theirs.per_second


def peer_table(rows: list[Row], workers: tuple[int, ...], top: int) -> list[str]:
    """Docnum ÷ each peer at ``top`` connections, per mode and worker count."""
    lines = [
        "| Docnum | workers | req/s | " + " | ".join(f"÷ {peer}" for peer in PEERS) + " |",
        "|---|--:|--:|" + "--:|" * len(PEERS),
    ]
    for w in workers:
        for mode in ("gapless", "sequence", "cached"):
            mine = find(rows, f"next-{mode}", w, top)
            ratios = [peer_ratio(rows, f"next-{mode}", w, peer, top) for peer in PEERS]
            lines.append(
                f"| {mode} next | {w} | {_cell(None if mine is None else mine.per_second)} | "
                + " | ".join("-" if r is None else f"{r:.1f}x" for r in ratios)
                + " |"
            )
    peers = [r for r in rows if r.kind == "peer" and r.connections == top]
    lines.append("")
    lines.append(
        "Peers at the same connections: "
        + ", ".join(
            f"{r.scenario} {r.per_second:,.0f} req/s (p99 {r.measured.p99_ms:.0f} ms)"
            for r in peers
        )
        + "."
    )
    return lines


@dataclass(frozen=True)
class Target:
    label: str
    value: float | None
    goal: float
    at_least: bool  # True: value >= goal passes; False: value <= goal passes
    unit: str

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.goal if self.at_least else self.value <= self.goal

    def verdict(self) -> str:
        if self.value is None:
            return "not measured (no answer within the run)"
        word = "PASS" if self.passed else "MISS"
        if self.unit == "%":  # a limit on a change: say how many points from it
            return f"{word} ({abs(self.goal - self.value):.1f} points from the limit)"
        margin = self.value / self.goal - 1
        side = "above" if margin >= 0 else "below"
        return f"{word} ({abs(margin):.0%} {side} the goal)"


def _format(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "numbers/s":
        return f"{value / 1e6:.2f}M numbers/s"
    if unit == "%":
        return f"{value:+.1f}%"
    return f"{value:g} {unit}"


def targets(
    rows: list[Row],
    workers: tuple[int, ...],
    top: int,
    batch_top: int,
    rss_growth: dict[int, float],
) -> list[Target]:
    """The service's performance goals, each checked at ``top`` connections per worker count.

    Batch latency is the exception: at many connections a batch's latency is mostly queueing
    (Little's law), so its p50 goal is checked at one connection, where it is the cost of one
    batch; its throughput goal is checked at ``batch_top`` (``top`` in the full run).
    """

    def answered(scenario: str, w: int, connections: int) -> Row | None:
        row = find(rows, scenario, w, connections)
        return row if row is not None and row.measured.requests else None

    def share(scenario: str, w: int) -> float | None:
        row = answered(scenario, w, top)
        return None if row is None else ratio(rows, row)

    def p99(scenario: str, w: int) -> float | None:
        row = answered(scenario, w, top)
        return None if row is None else row.measured.p99_ms

    found: list[Target] = []
    for w in workers:
        workers_text = f"{w} worker{'s' if w > 1 else ''}"
        at = f"{workers_text}, {top} connections"
        found += [
            Target(f"cached next / constant ({at})", share("next-cached", w), 1.0, True, "x"),
            Target(f"sequence next / nextval ({at})", share("next-sequence", w), 1.0, True, "x"),
            Target(f"gapless next / nextval ({at})", share("next-gapless", w), 1.0, True, "x"),
        ]
        found += [
            Target(
                f"{mode} next / forum's select_for_update ({at}; the peer: 4 sync workers)",
                peer_ratio(rows, f"next-{mode}", w, SELECT_FOR_UPDATE, top),
                goal,
                True,
                "x",
            )
            for mode, goal in PEER_GOALS
        ]
        for mode in ("cached", "gapless"):
            one = answered(f"batch10000-{mode}", w, 1)
            many = answered(f"batch10000-{mode}", w, batch_top)
            found += [
                Target(
                    f"{mode} batch of 10,000 p50 ({workers_text}, 1 connection)",
                    None if one is None else one.measured.p50_ms,
                    15,
                    False,
                    "ms",
                ),
                Target(
                    f"{mode} batch of 10,000 throughput ({workers_text}, {batch_top} connections)",
                    None if many is None else many.numbers_per_second,
                    2e6,
                    True,
                    "numbers/s",
                ),
            ]
        found += [
            Target(f"{mode} next p99 ({at})", p99(f"next-{mode}", w), 20, False, "ms")
            for mode in ("gapless", "sequence", "cached")
        ]
    found += [
        Target(f"RSS growth of worker {index} during the cached-next run", growth, 5, False, "%")
        for index, growth in sorted(rss_growth.items())
    ]
    return found


@dataclass(frozen=True)
class LogRun:
    """One run of the request log's paired measurement: the same load on Docnum with its default
    settings (one log line per request) or with ``DOCNUM_LOG_LEVEL=warning`` (none)."""

    pair: int
    level: str  # "default" or "warning"
    row: Row

    @property
    def cpu_per_request_us(self) -> float | None:
        """The server's CPU time per answered request: less swayed by a busy machine than req/s."""
        row = self.row
        if row.server_cpu is None or not row.per_second:
            return None
        return row.server_cpu / 100 / row.per_second * 1e6


LOG_LEVELS = ("default", "warning")


def log_medians(runs: list[LogRun]) -> dict[str, float]:
    """The median req/s of each log setting over the runs that got answers."""
    medians: dict[str, float] = {}
    for level in LOG_LEVELS:
        rates = [r.row.per_second for r in runs if r.level == level and r.row.measured.requests]
        if rates:
            medians[level] = statistics.median(rates)
    return medians


def log_cost_target(runs: list[LogRun]) -> Target:
    """The request log's cost: median req/s with the default settings over that at warning."""
    medians = log_medians(runs)
    cost = medians["default"] / medians["warning"] if len(medians) == 2 else None
    first = runs[0].row
    at = f"{first.workers} workers, {first.connections} connections"
    label = f"request log: cached next, default / warning ({at}, medians of {len(runs) // 2} pairs)"
    return Target(label, cost, 0.9, True, "x")


def log_cost_table(runs: list[LogRun]) -> list[str]:
    lines = [
        "| pair | run | log settings | req/s | server CPU µs/request | p50 ms | p99 ms | errors |"
    ]
    lines.append("|--:|--:|---|--:|--:|--:|--:|--:|")
    for index, run in enumerate(runs, 1):
        m = run.row.measured
        setting = "default (`info`)" if run.level == "default" else "`DOCNUM_LOG_LEVEL=warning`"
        lines.append(
            f"| {run.pair + 1} | {index} | {setting} | {_cell(run.row.per_second)} "
            f"| {_cell(run.cpu_per_request_us)} | {m.p50_ms:.2f} | {m.p99_ms:.2f} | {m.errors} |"
        )
    medians = log_medians(runs)
    for level in LOG_LEVELS:
        cpu = [r.cpu_per_request_us for r in runs if r.level == level]
        known = [c for c in cpu if c is not None]
        median_cpu = statistics.median(known) if known else None
        lines.append(
            f"| median | | {level} | {_cell(medians.get(level))} | {_cell(median_cpu)} | | | |"
        )
    return lines


def target_table(found: list[Target]) -> list[str]:
    lines = ["| target | goal | measured | verdict |", "|---|---|---|---|"]
    for target in found:
        goal = ("≥ " if target.at_least else "≤ ") + _format(target.goal, target.unit).lstrip("+")
        lines.append(
            f"| {target.label} | {goal} | {_format(target.value, target.unit)} "
            f"| {target.verdict()} |"
        )
    return lines


def _cell(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def http_table(rows: list[Row]) -> list[str]:
    lines = [
        "| scenario | workers | conns | req/s | numbers/s | p50 ms | p99 ms | served p99 ms "
        "| errors | RSS MB | server CPU % | PostgreSQL CPU % | vs reference |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in rows:
        if row.kind == "pgbench":
            continue
        share = ratio(rows, row)
        versus = "" if share is None else f"{share:.2f}x {row.reference}"
        lines.append(
            f"| {row.scenario}{' ' + row.note if row.note else ''} | {row.workers} "
            f"| {row.connections} | {_cell(row.per_second)} | {_cell(row.numbers_per_second)} "
            f"| {row.measured.p50_ms:.2f} | {row.measured.p99_ms:.2f} "
            f"| {_cell(row.served_p99_ms, 2)} | {row.measured.errors} "
            f"| {_cell(row.rss_mb, 1)} | {_cell(row.server_cpu)} | {_cell(row.postgres_cpu)} "
            f"| {versus} |"
        )
    return lines


def pgbench_table(rows: list[Row]) -> list[str]:
    lines = [
        "| statement | clients | transactions/s | numbers/s | p50 ms | p99 ms | failed |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        if row.kind != "pgbench":
            continue
        lines.append(
            f"| {row.scenario} | {row.connections} | {_cell(row.per_second)} "
            f"| {_cell(row.numbers_per_second)} | {row.measured.p50_ms:.2f} "
            f"| {row.measured.p99_ms:.2f} | {row.measured.errors} |"
        )
    return lines


# How each line is drawn, so a scenario looks the same in every panel and every run.
STYLES: dict[str, tuple[str, str]] = {
    "next-gapless": ("tab:green", "-"),
    "next-sequence": ("tab:purple", "-"),
    "next-cached": ("tab:orange", "-"),
    "next-gapless-idem": ("tab:red", "-"),
    "constant": ("tab:blue", "--"),
    "nextval": ("tab:brown", "--"),
    "batch1000-gapless": ("tab:olive", "--"),
    "batch10000-gapless": ("tab:green", "-"),
    "batch1000-cached": ("tab:pink", "--"),
    "batch10000-cached": ("tab:orange", "-"),
    "select_for_update": ("tab:gray", "-."),
    "django-sequences": ("tab:olive", "-."),
    "trigger": ("tab:cyan", "-."),
    "pgbench nextval": ("grey", ":"),
    "pgbench counter+1": ("black", ":"),
}


def _line(axis: Any, points: list[Row], label: str, value: Callable[[Row], float]) -> None:
    color, style = STYLES.get(label, ("tab:cyan", "-"))
    axis.plot(
        [r.connections for r in points],
        [value(r) for r in points],
        style,
        color=color,
        marker="o",
        markersize=4,
        label=label,
    )


def plot(rows: list[Row], workers: tuple[int, ...], path: Path) -> None:
    """Throughput against connections: single numbers (top), batches (bottom), per worker count.

    The y axes are logarithmic: PostgreSQL alone is an order of magnitude above HTTP, and on a
    log scale the ratio between two lines is the same distance wherever they sit.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    connections = sorted({r.connections for r in rows})
    measured = [r for r in rows if r.measured.requests and r.per_second > 0]
    figure, axes = plt.subplots(
        2, len(workers), figsize=(5.5 * len(workers) + 2.5, 9), sharex=True, squeeze=False
    )
    database = [
        r for r in measured if r.kind == "pgbench" and r.scenario in ("nextval", "counter+1")
    ]
    for column, w in enumerate(workers):
        top, bottom = axes[0][column], axes[1][column]
        for scenario in STYLES:
            points = sorted(
                (r for r in measured if r.workers == w and r.scenario == scenario),
                key=lambda r: r.connections,
            )
            if not points:
                continue
            if scenario.startswith("batch"):
                _line(bottom, points, scenario, lambda r: r.numbers_per_second)
            else:
                _line(top, points, scenario, lambda r: r.per_second)
        for peer in PEERS:  # the peers run with their own workers: shown in every column
            points = sorted(
                (r for r in measured if r.kind == "peer" and r.scenario == peer),
                key=lambda r: r.connections,
            )
            if points:
                _line(top, points, peer, lambda r: r.per_second)
        for statement in ("nextval", "counter+1"):
            points = sorted(
                (r for r in database if r.scenario == statement), key=lambda r: r.connections
            )
            if points:
                _line(top, points, f"pgbench {statement}", lambda r: r.per_second)
        bottom.axhline(2e6, color="red", linewidth=0.8, linestyle=":", label="goal: 2M numbers/s")
        plural = "s" if w > 1 else ""
        top.set_title(f"single numbers, {w} worker{plural}")
        top.set_ylabel("requests/s (log)")
        bottom.set_title(f"batches, {w} worker{plural}")
        bottom.set_ylabel("numbers/s (log)")
        bottom.set_xlabel("connections")
        for axis in (top, bottom):
            axis.set_xscale("log", base=2)
            axis.set_yscale("log")
            axis.set_xticks(connections, [str(c) for c in connections])
            axis.grid(True, which="major", alpha=0.4)
            axis.grid(True, which="minor", alpha=0.1)
    for row in axes:
        row[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    figure.suptitle(
        "Docnum throughput against connections (dashed: references; dash-dot: the Django peers; "
        "dotted: pgbench, no HTTP)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)

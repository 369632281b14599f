"""The peer loader harness in interleaved rounds, for a machine shared with other jobs.

    /tmp/peers-venv/bin/python benchmarks/loader_rounds.py --rounds 5 \\
        --plugin benchmarks/loader_plugin.py --reference torchcodec-tsn \\
        --configs ours,torchcodec-tsn,decode-only-pyav,ours-prepared,torchcodec-tsn@prepared

`loader_bench.py` times one configuration after the other, so a neighbour's load that comes and
goes lands on some configurations only. Here every round times each configuration once with the
harness's own `run_config` (its DataLoader settings, warm-up and finalize; one timed run of
--batches batches), in a shuffled order, so configurations are compared within a round: the
table gives each one's median clips/s (videos/s for decode-only lines) and the median and range
of its per-round ratio to --reference. The JSON records of every run go to --json-out.

CPU use: the harness's `cpu_busy_pct` counts the whole machine, neighbours included. Here
`demand` is the share of the timed batches' wall time during which the loader's workers were
running or waiting in a run queue (from /proc/<pid>/task/*/schedstat, averaged over the workers):
a loader whose workers never wait on anything but a CPU shows ~100 % however busy the neighbours
keep the machine. `got` is the share of all cores that the loader's processes (main + workers)
actually ran, and `per CPU s` the clips (videos) delivered per CPU second they used: the figure
that stays put when neighbours take the CPU, and that an idle machine multiplies by its cores.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

# ../shared beside the checkout (a worktree under wt/ has it one level further up)
_SHARED = next((p / "shared" for p in Path(__file__).resolve().parents[2:4] if (p / "shared").is_dir()),
               Path(__file__).resolve().parents[2] / "shared")
HARNESS = _SHARED / "tools/loader-bench/loader_bench.py"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _family(pid: int) -> list[int]:
    """pid and its forked descendants (the DataLoader workers, which share its command line; a
    multiprocessing resource tracker or spawned pool does not)."""
    out, todo, me = [], [pid], _cmdline(pid)
    while todo:
        p = todo.pop()
        if p != pid and _cmdline(p) != me:
            continue
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _sched() -> dict[int, tuple[float, float]]:
    """{pid: (CPU seconds, seconds its threads ran or waited to run)} over this process family
    (demand 0 for this process: the workers' demand is what is asked). CPU time is
    /proc/<pid>/stat's utime + stime, which keeps the time of threads that have exited (decord's
    and FFmpeg's per-file threads); run-queue waits exist per live thread only."""
    out, me, tick = {}, os.getpid(), os.sysconf("SC_CLK_TCK")
    for p in _family(me):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / tick
            tasks = os.listdir(f"/proc/{p}/task") if p != me else []
        except (OSError, ValueError, IndexError):
            continue
        demand = 0.0
        for task in tasks:
            try:
                with open(f"/proc/{p}/task/{task}/schedstat") as f:
                    r, w, _ = f.read().split()
            except (OSError, ValueError):
                continue
            demand += (int(r) + int(w)) / 1e9
        out[p] = (cpu, demand)
    return out


def _usage(before: dict, after: dict, seconds: float) -> tuple[float, float]:
    """(CPU seconds the family used between two `_sched` snapshots, workers' demand in % of the
    time). Only workers that ran in between count: the idle workers of an earlier configuration
    that are not collected yet would halve the figure; a process gone by `after` is missed."""
    cpu = sum(c - before.get(p, (0.0, 0.0))[0] for p, (c, _) in after.items())
    ran = [d - before[p][1] for p, (_, d) in after.items()
           if p in before and p != os.getpid() and d - before[p][1] > 0.01 * seconds]
    return cpu, 100 * sum(ran) / (seconds * max(len(ran), 1))


def _instrumented(builder, run_args, marks: list):
    """builder whose finalize snapshots the scheduler counters around the timed batches."""
    def build(root, classes, items, args):
        cfg = builder(root, classes, items, args)
        finalize, calls = cfg["finalize"], [0]
        edges = (run_args.warmup, run_args.warmup + run_args.runs * run_args.batches)

        def timed(batch):
            res = finalize(batch)
            calls[0] += 1
            if calls[0] in edges:
                marks.append((time.perf_counter(), _sched()))
            return res

        cfg["finalize"] = timed
        return cfg
    return build


def rate(rec: dict) -> float:
    """videos/s for decode-only lines (a TSN clip of a long-GOP file costs about one video), else clips/s."""
    return rec["videos_per_s"] if "videos_per_s" in rec else rec["clips_per_s"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--harness", type=Path, default=HARNESS, help="loader_bench.py (default: %(default)s)")
    ap.add_argument("--data", default=str(HARNESS.parents[2] / "data/ucf101-6/videos"))
    ap.add_argument("--plugin", action="append", default=[], type=Path)
    ap.add_argument("--configs", required=True, help="comma-separated configuration names")
    ap.add_argument("--reference", help="configuration the ratios are taken to (default: the first)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=15, help="timed batches per configuration and round")
    ap.add_argument("--warmup", type=int, default=4, help="untimed batches first (covers start-up)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args(argv)

    harness = _load(args.harness, "loader_bench")  # the plugins find it under this name
    for i, plug in enumerate(args.plugin):
        harness.CONFIGS.update(_load(plug, f"_rounds_plugin_{i}").CONFIGS)
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [n for n in names if n not in harness.CONFIGS]
    if unknown:
        ap.error(f"unknown configuration(s): {unknown}")
    ref = args.reference or names[0]
    if ref not in names:
        ap.error(f"--reference {ref} is not among --configs")
    classes, items = harness.list_videos(str(Path(args.data).resolve()))
    run_args = argparse.Namespace(batch_size=args.batch_size, workers=args.workers, warmup=args.warmup,
                                  runs=1, batches=args.batches, seed=args.seed)
    rates: dict[str, list] = {n: [] for n in names}
    busy: dict[str, list] = {n: [] for n in names}
    order = random.Random(args.seed)
    for r in range(args.rounds):
        todo = names[:]
        order.shuffle(todo)
        for n in todo:
            marks: list = []
            peer, mods, builder, desc = harness.CONFIGS[n]
            harness.CONFIGS[n] = (peer, mods, _instrumented(builder, run_args, marks), desc)
            try:
                rec = harness.run_config(n, str(Path(args.data).resolve()), classes, items, run_args)
            finally:
                harness.CONFIGS[n] = (peer, mods, builder, desc)
            if len(marks) == 2:
                (t0, s0), (t1, s1) = marks
                cpu, demand = _usage(s0, s1, t1 - t0)
                rec["demand_pct"] = round(demand, 1)
                rec["got_pct"] = round(100 * cpu / ((t1 - t0) * (os.cpu_count() or 1)), 1)
                rec["per_cpu_s"] = round(rate(rec) * (t1 - t0) / max(cpu, 1e-9), 2)
            rec["round"] = r
            rates[n].append(rate(rec))
            busy[n].append((rec.get("demand_pct", float("nan")), rec.get("got_pct", float("nan")),
                            rec.get("per_cpu_s", float("nan"))))
            print(f"# round {r + 1}/{args.rounds} {n}: {rate(rec):.2f}, demand {rec.get('demand_pct')} %, "
                  f"got {rec.get('got_pct')} %, {rec.get('per_cpu_s')} per CPU s", file=sys.stderr, flush=True)
            if args.json_out:
                with open(args.json_out, "a") as f:
                    f.write(json.dumps(rec) + "\n")
    print(f"{len(items)} videos, batch {args.batch_size}, {args.workers} workers, {args.rounds} rounds x "
          f"{args.batches} batches; ratios are per round to {ref}")
    print(f"{'config':<28} {'median':>8} {'min..max':>14} {'ratio':>6} {'ratio min..max':>15} "
          f"{'demand %':>8} {'got %':>6} {'per CPU s':>9} {'ratio':>6}")
    ref_eff = statistics.median(b[2] for b in busy[ref])
    for n in names:
        ratios = [a / b for a, b in zip(rates[n], rates[ref])]
        eff = statistics.median(b[2] for b in busy[n])
        print(f"{n:<28} {statistics.median(rates[n]):>8.2f} {min(rates[n]):>6.1f}..{max(rates[n]):<6.1f} "
              f"{statistics.median(ratios):>6.2f} {min(ratios):>7.2f}..{max(ratios):<6.2f} "
              f"{statistics.median(b[0] for b in busy[n]):>8.1f} {statistics.median(b[1] for b in busy[n]):>6.1f} "
              f"{eff:>9.2f} {eff / ref_eff:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

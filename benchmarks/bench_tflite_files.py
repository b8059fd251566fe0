"""Latency of several ``.tflite`` files measured side by side, for fair before/after comparisons.

Each file gets its own LiteRT interpreter (XNNPACK, ``--threads`` threads) and
one random canvas of the shape and dtype its input declares. After one warm-up
call each, the files are invoked in turn, round after round, so that whatever
else the machine is doing weighs on all of them alike. Prints, per file, the
median and the minimum of ``--runs`` invocations, and each median relative to
the first file's, in wall seconds and in CPU seconds of this process. On a
machine shared with other work the CPU seconds at ``--threads 1`` are the
steadier measure of how much work a file is: another process's load stretches
the wall time but not the CPU time spent here.

    python benchmarks/bench_tflite_files.py before/gfocal_int8.tflite after/gfocal_int8.tflite --runs 20
"""

import argparse
import os
import statistics
import time

import numpy as np
from common import cpu_name


def interpreter_with_input(path, threads, seed):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    canvas = np.random.default_rng(seed).uniform(0, 255, detail["shape"]).astype(detail["dtype"])
    return interpreter, detail["index"], canvas


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help=".tflite files; the first is the baseline")
    parser.add_argument("--runs", type=int, default=10, help="timed invocations per file (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for path in args.files:
        if not os.path.isfile(path):
            parser.error(f"no such file: {path}")

    runners = [interpreter_with_input(path, args.threads, args.seed) for path in args.files]
    wall = [[] for _ in runners]
    cpu = [[] for _ in runners]
    for round_index in range(args.runs + 1):
        for (interpreter, index, canvas), wall_times, cpu_times in zip(runners, wall, cpu):
            start, start_cpu = time.perf_counter(), time.process_time()
            interpreter.set_tensor(index, canvas)
            interpreter.invoke()
            if round_index:  # the first round is the warm-up
                wall_times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - start_cpu)

    print(
        f"{time.strftime('%Y-%m-%d')} | {cpu_name()} | {os.cpu_count()} cores | LiteRT, XNNPACK, "
        f"{args.threads} threads | {args.runs} interleaved runs after one warm-up"
    )
    print("| file | size | wall median | wall min | vs first | CPU median | CPU min | vs first |")
    print("|---|---|---|---|---|---|---|---|")
    wall_baseline, cpu_baseline = statistics.median(wall[0]), statistics.median(cpu[0])
    for path, wall_times, cpu_times in zip(args.files, wall, cpu):
        wall_median, cpu_median = statistics.median(wall_times), statistics.median(cpu_times)
        print(
            f"| {path} | {os.path.getsize(path) / 1e6:.1f} MB | {wall_median:.3f} s | {min(wall_times):.3f} s "
            f"| {wall_median / wall_baseline:.2f} | {cpu_median:.3f} s | {min(cpu_times):.3f} s "
            f"| {cpu_median / cpu_baseline:.2f} |"
        )


if __name__ == "__main__":
    main()

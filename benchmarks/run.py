#!/usr/bin/env python3
"""Reproduce the performance figures of docs/performance.md: `make bench`.

Runs the harness in benchmarks/harness/ (a real nginx + wrk, every contender
in one interleaved run) once per scenario, keeps its JSON, and writes a
Markdown table, the ratios against the targets and a PNG plot into
benchmarks/results/<timestamp>/.

    make bench                                      # set-up, then every scenario, 5 rounds of 10 s
    python3 benchmarks/run.py --scenarios hello --repeat 3 --duration 5
    python3 benchmarks/run.py --scenarios hello --contenders wsgi_fcgi,uwsgi-fastcgi \
        --duration 3 --repeat 1 --out /tmp/bench  # a quick look, nothing written in the checkout
    python3 benchmarks/run.py --report benchmarks/results/<timestamp>   # redo table + plot
    python3 benchmarks/run.py --scenarios hello,echo --baseline HEAD~1  # before/after of a change

"wsgi_fcgi" is the working tree, pure Python; "wsgi_fcgi-compiled" the
same code with its protocol core compiled (setup.py), from the wheel `make
wheel` builds.  Each target below applies to both.

--baseline REV adds the project as of git revision REV (its wsgi_fcgi/ from
`git archive`) as the contender "baseline" to every scenario, interleaved
with the working tree's wsgi_fcgi: the before/after figure an engine change
carries in its commit message.

Needs the harness set up once: `bash benchmarks/harness/setup.sh` (nginx, wrk
and libfcgi-dev from Debian; uWSGI, flup, fcgisgi, gunicorn and Flask from
PyPI into $BENCH_VENV, default /tmp/wsgi-fcgi-bench-venv; the C libfcgi
responder built from benchmarks/harness/native/fcgi_hello.c).  `make bench`
runs it first.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "benchmarks" / "harness" / "run.py"
RESULTS = ROOT / "benchmarks" / "results"

#: A wsgi_fcgi other than the working tree's (the baseline, the compiled build)
#: runs from its own directory: `python -m` puts the working directory first
#: on sys.path, so from the checkout it would import the tree.
FROM_DIRECTORY = ("{name}=fastcgi:env -C {src} PYTHONPATH={src} {{project_python}} -m wsgi_fcgi "
                  "--bind 127.0.0.1:{{port}} --workers {{workers}} --threads {{threads}} --chdir {{appdir}} "
                  "{{module}}:app")
COMPILED = "wsgi_fcgi-compiled"
#: the contenders that are this project; a target of "wsgi_fcgi" applies to each
PROJECT_BUILDS = ("wsgi_fcgi", COMPILED)

#: a "-2w" scenario runs every contender with two worker processes; this one
#: worker, beside them, measures how far a second worker carries the app
ONE_WORKER = ("wsgi_fcgi-1w=fastcgi:{project_python} -m wsgi_fcgi --bind 127.0.0.1:{port} "
              "--workers 1 --threads {threads} {module}:app")
TWO_WORKERS = ["--workers", "2"]

#: name -> (harness --app, contenders, extra harness args, [(A, B, target ratio)]); the targets are issue 14's
SCENARIOS = {
    "hello": ("hello", "wsgi_fcgi,wsgi_fcgi-compiled,uwsgi-fastcgi,c-libfcgi,flup-threaded-unix,fcgisgi-unix,"
              "gunicorn-gthread-http,gunicorn-sync-http,nginx-static", [],
              [("wsgi_fcgi", "uwsgi-fastcgi", 1.5), ("wsgi_fcgi", "c-libfcgi", 0.5),
               ("wsgi_fcgi", "flup-threaded-unix", 3.0), ("wsgi_fcgi", "fcgisgi-unix", 3.0),
               ("wsgi_fcgi", "gunicorn-gthread-http", 2.5)]),
    "flask": ("flask", "wsgi_fcgi,wsgi_fcgi-compiled,uwsgi-fastcgi,flup-threaded-unix,gunicorn-gthread-http", [],
              [("wsgi_fcgi", "uwsgi-fastcgi", 1.3), ("wsgi_fcgi", "gunicorn-gthread-http", 1.3)]),
    "echo": ("echo", "wsgi_fcgi,wsgi_fcgi-compiled,uwsgi-fastcgi,flup-threaded-unix,gunicorn-sync-http", [],
             [("wsgi_fcgi", "uwsgi-fastcgi", 1.3), ("wsgi_fcgi", "flup-threaded-unix", 2.0)]),
    "wait": ("wait", "wsgi_fcgi,uwsgi-fastcgi,gunicorn-gthread-http", [],
             [("wsgi_fcgi", "uwsgi-fastcgi", 1.0), ("wsgi_fcgi", "gunicorn-gthread-http", 1.0)]),
    "big": ("big", "wsgi_fcgi,wsgi_fcgi-compiled,c-libfcgi,uwsgi-fastcgi,flup-threaded-unix", [],
            [("wsgi_fcgi", "c-libfcgi", 1.0)]),
    "download": ("download", "wsgi_fcgi,wsgi_fcgi-compiled,uwsgi-fastcgi,gunicorn-sync-http", [],
                 [("wsgi_fcgi", "uwsgi-fastcgi", 1.3), ("wsgi_fcgi", "gunicorn-sync-http", 1.0)]),
    "stream": ("stream", "wsgi_fcgi,wsgi_fcgi-compiled,uwsgi-fastcgi,gunicorn-gthread-http", [],
               [("wsgi_fcgi", "uwsgi-fastcgi", 1.0), ("wsgi_fcgi", "gunicorn-gthread-http", 1.0)]),
    # issue 14: "the same targets hold with --workers 2 against uWSGI with 2 processes"
    "hello-2w": ("hello", "wsgi_fcgi,wsgi_fcgi-compiled,uwsgi-fastcgi", TWO_WORKERS,
                 [("wsgi_fcgi", "uwsgi-fastcgi", 1.5)]),
    "flask-2w": ("flask", "wsgi_fcgi,wsgi_fcgi-compiled,uwsgi-fastcgi,wsgi_fcgi-1w",
                 [*TWO_WORKERS, "--define", ONE_WORKER],
                 [("wsgi_fcgi", "uwsgi-fastcgi", 1.3), ("wsgi_fcgi", "wsgi_fcgi-1w", 1.4)]),
    "echo-2w": ("echo", "wsgi_fcgi,wsgi_fcgi-compiled,uwsgi-fastcgi", TWO_WORKERS,
                [("wsgi_fcgi", "uwsgi-fastcgi", 1.3)]),
    "big-2w": ("big", "wsgi_fcgi,wsgi_fcgi-compiled,c-libfcgi,uwsgi-fastcgi", TWO_WORKERS,
               [("wsgi_fcgi", "c-libfcgi", 1.0)]),
}

#: name -> [(per-round figure, A, B, most A/B may be)]: issue 14's targets on backend CPU and p99
UPPER_BOUNDS = {
    "hello": [("backend_cpu_us_per_req", "wsgi_fcgi", "uwsgi-fastcgi", 0.8),
              ("p99_ms", "wsgi_fcgi", "uwsgi-fastcgi", 1.0)],
    "hello-2w": [("backend_cpu_us_per_req", "wsgi_fcgi", "uwsgi-fastcgi", 0.8),
                 ("p99_ms", "wsgi_fcgi", "uwsgi-fastcgi", 1.0)],
}


def contenders_of(name: str, args) -> list:
    contenders = SCENARIOS[name][1].split(",")
    if args.contenders:
        wanted = args.contenders.split(",")
        contenders = [c for c in contenders if c in wanted]
    return contenders


def run_scenario(name: str, out: Path, args, sources: dict) -> Path:
    """`sources`: contender -> the directory it runs from (the baseline, the compiled build)."""
    app, _, extra, _ = SCENARIOS[name]
    contenders = contenders_of(name, args)
    if "baseline" in sources:
        contenders.append("baseline")
    for contender, src in sources.items():
        if contender in contenders:
            extra = [*extra, "--define", FROM_DIRECTORY.format(name=contender, src=src)]
    contenders = ",".join(contenders)
    json_path = out / ("%s.json" % name)
    cmd = [sys.executable, str(HARNESS), "--project", str(ROOT), "--app", app,
           "--contenders", contenders, "--repeat", str(args.repeat), "--duration", str(args.duration),
           "--json", str(json_path), *extra]
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return json_path


def export_baseline(rev: str, into: Path) -> dict:
    """wsgi_fcgi/ as of git revision `rev`, extracted into `into`."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", rev + "^{commit}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "wsgi_fcgi"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return {"rev": rev, "commit": commit}


def build_compiled(into: Path) -> None:
    """The wheel with the compiled core (`make wheel`), unpacked into `into`."""
    subprocess.run(["make", "-C", str(ROOT), "wheel"], check=True)
    wheel, = (ROOT / "build" / "mypyc-wheel").glob("*.whl")
    subprocess.run([sys.executable, "-m", "zipfile", "-e", str(wheel), str(into)], check=True)


def median_ratio(a_rounds: list, b_rounds: list) -> float | None:
    """The median of A/B over the rounds both measured."""
    per_round = sorted(x / y for x, y in zip(a_rounds, b_rounds, strict=False) if x and y)
    return per_round[len(per_round) // 2] if per_round else None


def ratios(doc: dict) -> dict:
    """Per-round req/s ratio A/B for every pair of contenders, and its median."""
    by_name = {s["contender"]: s for s in doc["summary"] if s.get("rps")}
    result = {}
    for a, sa in by_name.items():
        for b, sb in by_name.items():
            if a != b and len(sa["rps"]) == len(sb["rps"]):
                value = median_ratio(sa["rps"], sb["rps"])
                if value is not None:
                    result[(a, b)] = value
    return result


def per_round_ratio(doc: dict, key: str, a: str, b: str) -> float | None:
    """Median over the rounds of A's figure `key` divided by B's in the same round."""
    rounds: dict = {}
    for run in doc.get("runs", []):
        rounds.setdefault(run["contender"], []).append(run.get(key))
    return median_ratio(rounds.get(a, []), rounds.get(b, []))


def builds_of(contender: str, doc: dict, against: str) -> list:
    """A target's contender "wsgi_fcgi" stands for each build of the project the
    run measured, when it is measured against another server."""
    if contender != "wsgi_fcgi" or against.startswith("wsgi_fcgi"):
        return [contender]
    measured = {s["contender"] for s in doc["summary"]}
    return [build for build in PROJECT_BUILDS if build in measured] or [contender]


def report(out: Path) -> str:
    lines = ["# Benchmark results (%s)" % out.name, ""]
    docs = {}
    for name in SCENARIOS:
        path = out / ("%s.json" % name)
        if path.exists():
            docs[name] = json.loads(path.read_text())
    lines += ["| scenario | contender | req/s median | p99 ms | backend CPU us/req | nginx CPU us/req "
              "| RSS MiB | PSS MiB |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, doc in docs.items():
        for s in doc["summary"]:
            if "rps_median" in s:
                lines.append("| %s | %s | %.0f | %.2f | %s | %s | %.1f | %.1f |" % (
                    name, s["contender"], s["rps_median"], s["p99_ms"],
                    "%.0f" % s["backend_cpu_us_per_req"] if s.get("backend_cpu_us_per_req") else "-",
                    "%.0f" % s["nginx_cpu_us_per_req"] if s.get("nginx_cpu_us_per_req") else "-",
                    s["rss_peak_kib"] / 1024 if s.get("rss_peak_kib") else 0,
                    s["pss_peak_kib"] / 1024 if s.get("pss_peak_kib") else 0))
    lines += ["", "| scenario | ratio (median of per-round ratios: req/s unless named) | measured | target | met |",
              "| --- | --- | --- | --- | --- |"]
    baseline_file = out / "baseline.json"
    baseline = json.loads(baseline_file.read_text()) if baseline_file.exists() else None
    for name, doc in docs.items():
        found = ratios(doc)
        for contender, b, target in SCENARIOS[name][3]:
            for a in builds_of(contender, doc, b):
                value = found.get((a, b))
                lines.append("| %s | %s / %s | %s | >= %.1f | %s |" % (
                    name, a, b, "%.2f" % value if value else "-", target,
                    "-" if not value else "yes" if value >= target else "no"))
        for key, contender, b, bound in UPPER_BOUNDS.get(name, []):
            for a in builds_of(contender, doc, b):
                value = per_round_ratio(doc, key, a, b)
                lines.append("| %s | %s %s / %s | %s | <= %.1f | %s |" % (
                    name, key, a, b, "%.2f" % value if value else "-", bound,
                    "-" if not value else "yes" if value <= bound else "no"))
        if (COMPILED, "wsgi_fcgi") in found:
            lines.append("| %s | %s / wsgi_fcgi | %.2f | - | - |" % (name, COMPILED, found[(COMPILED, "wsgi_fcgi")]))
        if baseline and ("wsgi_fcgi", "baseline") in found:
            lines.append("| %s | wsgi_fcgi / baseline (%s, %s) | %.2f | - | - |" % (
                name, baseline["rev"], baseline["commit"][:10], found[("wsgi_fcgi", "baseline")]))
    meta = next(iter(docs.values()))["meta"] if docs else {}
    if meta:
        lines += ["", "Machine: %s CPUs (%s), kernel %s, %s; %s rounds of %s s, interleaved." % (
            meta["versions"].get("cpus"), meta["versions"].get("cpu_model"), meta["versions"].get("kernel"),
            meta["versions"].get("nginx"), meta.get("repeat"), meta.get("duration_s"))]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    plot(docs, out / "results.png")
    return text


def plot(docs: dict, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return
    names = list(docs)
    if not names:
        return
    # each scenario a column of two plots (req/s over p99), at most 5 columns a band
    columns = min(len(names), 5)
    bands = -(-len(names) // columns)
    fig, axes = plt.subplots(2 * bands, columns, figsize=(4.2 * columns, 7 * bands), squeeze=False)
    for column in range(len(names) - (bands - 1) * columns, columns):  # the last band's empty columns
        axes[-1][column].set_visible(False)
        axes[-2][column].set_visible(False)
    for index, name in enumerate(names):
        band, column = divmod(index, columns)
        rows = [s for s in docs[name]["summary"] if "rps_median" in s]
        labels = [s["contender"] for s in rows]
        colours = ["tab:red" if s["contender"].startswith("wsgi_fcgi") else "tab:gray" for s in rows]
        for row, (key, title) in enumerate((("rps_median", "req/s"), ("p99_ms", "p99 ms"))):
            ax = axes[2 * band + row][column]
            ax.barh(labels, [s[key] for s in rows], color=colours)
            ax.set_title("%s: %s" % (name, title), fontsize=10)
            ax.tick_params(labelsize=8)
            ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print("wrote %s" % path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list of: " + ", ".join(SCENARIOS))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--contenders", help="only these (comma list) of each scenario's contenders")
    parser.add_argument("--out", metavar="DIR", help="write here instead of benchmarks/results/<timestamp>")
    parser.add_argument("--report", metavar="DIR", help="only rebuild results.md and the plot from DIR")
    parser.add_argument("--baseline", metavar="REV", help="also run wsgi_fcgi as of git revision REV")
    args = parser.parse_args()
    if args.report:
        print(report(Path(args.report)))
        return
    names = [name.strip() for name in args.scenarios.split(",")]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        parser.error("unknown scenario %s (known: %s)" % (", ".join(unknown), ", ".join(SCENARIOS)))
    out = Path(args.out) if args.out else RESULTS / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wsgi-fcgi-bench-") as tmp:
        sources = {}
        if args.baseline:
            sources["baseline"] = Path(tmp) / "baseline"
            sources["baseline"].mkdir()
            (out / "baseline.json").write_text(json.dumps(export_baseline(args.baseline, sources["baseline"])) + "\n")
        if any(COMPILED in contenders_of(name, args) for name in names):
            sources[COMPILED] = Path(tmp) / "compiled"
            build_compiled(sources[COMPILED])
        for name in names:
            run_scenario(name, out, args, sources)
    print(report(out))


if __name__ == "__main__":
    main()

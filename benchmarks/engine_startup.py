"""`podman run --rm IMAGE true` with pyinit as the ENTRYPOINT beside tini, dumb-init and no init, with hyperfine.

The image is the one users build: examples/Dockerfile as written, with tini and dumb-init added (as
tests/test_engines.py does, whose tests/engines.py sets podman up on this host and makes the base
image). Each variant is the same `podman run --rm --network none` of that image, only the
ENTRYPOINT differs; hyperfine runs them side by side and prints its summary.

usage: sudo python3 benchmarks/engine_startup.py [--runs N] [--markdown PATH] [--json PATH]
Needs Debian's podman, crun, debootstrap, tini, dumb-init and hyperfine.
"""

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import engines  # noqa: E402 (tests/engines.py: the host set-up and the base image)

C_INITS = {"tini": "/usr/bin/tini-static", "dumb-init": "/usr/bin/dumb-init"}
VARIANTS = {"pyinit": "pyinit --", "tini": "tini --", "dumb-init": "dumb-init --", "no init": ""}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--markdown", help="hyperfine's table, as Markdown, to this file")
    parser.add_argument("--json", help="hyperfine's samples, as JSON, to this file (medians, every time)")
    options = parser.parse_args()
    if shutil.which("hyperfine") is None:
        sys.exit("engine_startup.py: hyperfine is not installed (Debian package hyperfine)")
    with engines.engine_session("podman") as podman, tempfile.TemporaryDirectory() as context:
        podman.build(REPO, REPO / "examples" / "Dockerfile", "pyinit-example")
        for init, path in C_INITS.items():
            shutil.copy(path, Path(context) / init)
        (Path(context) / "Containerfile").write_text("FROM pyinit-example\nCOPY %s /usr/local/bin/\n" % " ".join(C_INITS))
        podman.build(Path(context), Path(context) / "Containerfile", "pyinit-startup")
        run = shlex.join(podman.command("run", "--rm", *podman.run_options()))
        commands = []
        for name, entrypoint in VARIANTS.items():
            program, *args = (entrypoint + " true").split()
            commands += ["-n", name, "%s --entrypoint %s pyinit-startup %s" % (run, program, shlex.join(args))]
        extra = ["--export-markdown", options.markdown] if options.markdown else []
        extra += ["--export-json", options.json] if options.json else []
        done = subprocess.run(["hyperfine", "-N", "--warmup", "3", "--runs", str(options.runs), *extra, *commands],
                              env=podman.env)
        return done.returncode


if __name__ == "__main__":
    sys.exit(main())

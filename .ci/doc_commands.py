"""Runs every shell command of README.md and the guides under docs/, as a new user would, so that a
snippet that no longer works fails CI.

    .venv/bin/python .ci/doc_commands.py [--keep]

Fenced blocks tagged `sh` run, in page order (README first: the guides build on its walkthrough),
in one bash session (`set -euo pipefail`) in a fresh scratch folder where `.venv` is this checkout's
venv. A block tagged `sh not-run` must start with `# not run here: <reason>` (what these machines
lack: Docker, a cloud project, a cluster); the reasons are listed. Any other shell-like tag
(`bash`, `console`, `shell`) is refused, so that no command escapes both. Output goes to
<scratch>/doc_commands.log; exit status 1 names the page and line of the failing block.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# README first, then the guides in the order of README's table (later pages use the walkthrough's
# my-data, my.yaml and my-work).
PAGES = ["README.md"] + [f"docs/{name}.md" for name in (
    "data-formats", "configuration", "pipeline", "model", "serving", "production", "distributed",
    "tuning", "cli", "development")]
FENCE = re.compile(r"^```(\S*)(?: (.*))?$")
SHELL_TAGS = {"bash", "console", "shell", "zsh"}
SKIP_REASON = re.compile(r"^# not run here: \S")


def blocks(page: str):
    """(tag, options, first line number, lines) of each fenced block of a page."""
    with open(os.path.join(ROOT, page)) as f:
        lines = f.read().split("\n")
    found, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match and match.group(1):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            found.append((match.group(1), match.group(2) or "", i + 1, lines[i + 1:end]))
            i = end
        i += 1
    return found


def script_and_skips():
    """The bash script of every runnable block, and (page:line, reason) of each skipped one."""
    parts, skipped, problems = [], [], []
    for page in PAGES:
        for tag, options, line, body in blocks(page):
            where = f"{page}:{line}"
            if tag in SHELL_TAGS:
                problems.append(f"{where}: a ```{tag} block: tag it `sh` (run) or `sh not-run`")
            elif tag != "sh":
                continue  # yaml, text: read, not run
            elif options == "not-run":
                if not body or not SKIP_REASON.match(body[0]):
                    problems.append(f"{where}: a not-run block must start with "
                                    "`# not run here: <reason>`")
                else:
                    skipped.append((where, body[0][len("# not run here: "):]))
            elif options:
                problems.append(f"{where}: unknown block options {options!r}")
            else:
                parts.append(f"echo '>>> {where}' >&2\n" + "\n".join(body))
    return "\n".join(parts), skipped, problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    script, skipped, problems = script_and_skips()
    if problems:
        sys.exit("\n".join(problems))
    scratch = tempfile.mkdtemp(prefix="mtmoe-docs-")
    os.symlink(os.path.join(ROOT, ".venv"), os.path.join(scratch, ".venv"))
    prelude = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
    log = os.path.join(scratch, "doc_commands.log")
    print(f"running the commands of {len(PAGES)} pages in {scratch} (log: {log})", flush=True)
    with open(log, "w") as out:
        done = subprocess.run(["bash", "-c", prelude + script], cwd=scratch, stdout=out,
                              stderr=subprocess.STDOUT)
    with open(log) as f:
        places = [line[4:].strip() for line in f if line.startswith(">>> ")]
    for where, reason in skipped:
        print(f"  not run: {where}: {reason}")
    if done.returncode:
        print(f"FAILED in the block at {places[-1] if places else '?'} (exit {done.returncode}); "
              f"the last lines of {log}:")
        with open(log) as f:
            print("".join(f.readlines()[-30:]))
        sys.exit(1)
    print(f"all {len(places)} blocks ran")
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

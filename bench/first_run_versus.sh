#!/usr/bin/env bash
# The first `mtmoe run` on the sample (a fresh work dir, default config) of two commits, taking
# turns in one sitting on this machine, with the project's venv: each commit's package is installed
# by its own setup.py into a folder of its own (no dependencies) and put first on PYTHONPATH.
#   bench/first_run_versus.sh BASE_COMMIT NEW_COMMIT [ROUNDS] [FOLDER]
# Prints one line per run: the whole command's seconds and each step's that took a second or more.
set -euo pipefail
base=$1 new=$2 rounds=${3:-2} folder=${4:-$(mktemp -d /tmp/first-run-XXXXXX)}
repo=$(cd "$(dirname "$0")/.." && pwd)
python=$repo/.venv/bin/python

for commit in "$base" "$new"; do
  rm -rf "$folder/$commit" && mkdir -p "$folder/$commit/src"
  git -C "$repo" archive "$commit" | tar -x -C "$folder/$commit/src"
  "$python" -m pip install --quiet --no-deps --no-build-isolation --no-index \
    --target "$folder/$commit/pkg" "$folder/$commit/src"
done

for round in $(seq "$rounds"); do
  for commit in "$base" "$new"; do
    work=$folder/run-$commit-$round
    rm -rf "$work" && mkdir -p "$work"
    start=$(date +%s.%N)
    (cd "$work" && PYTHONPATH=$folder/$commit/pkg "$python" -c \
      "import sys; from mtmoe.cli import main; sys.exit(main())" run --work-dir w > console.log 2>&1)
    end=$(date +%s.%N)
    steps=$(grep -E 'done in' "$work/console.log" | grep -v ' 0\.[0-9] s' | tr -s ' ' | tr '\n' ';')
    echo "$commit round $round $(date -u -d @"${start%.*}" +%H:%M:%S) UTC: $(echo "$end - $start" | bc) s;$steps"
  done
done

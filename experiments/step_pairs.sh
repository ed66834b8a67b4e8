#!/usr/bin/env bash
# Issue 29: wall time of `x3dsearch step --seed 0` from BASE (a preset name, default XS, or a config YAML),
# alternating the code of another checkout (e.g. a worktree of 38fb134, the code before issue 29) and this one's,
# alone on the box; each run's folder holds its step.json.
#   git worktree add /tmp/before 38fb134 && experiments/step_pairs.sh /tmp/before [PAIRS] [OUT] [BASE]
set -euo pipefail
before=$(cd "$1" && pwd); pairs=${2:-2}; out=${3:-/tmp/step_pairs}; base=${4:-XS}
case $base in  # a config file by its name, so a mistyped path says "not found" rather than "unknown preset"
  *.yaml|*.yml|*/*) base=(--config "$(cd "$(dirname "$base")" && pwd)/$(basename "$base")") ;;
  *) base=(--preset "$base") ;;
esac
here=$(cd "$(dirname "$0")/.." && pwd); python="$here/.venv/bin/python"
mkdir -p "$out"; out=$(cd "$out" && pwd)  # absolute: each run below starts in another folder
for i in $(seq "$pairs"); do
  rm -rf "$out/before$i" "$out/now$i"
  (cd "$before" && /usr/bin/time -f "before $i wall %e s" env PYTHONPATH="$before" "$python" -m x3dsearch.cli step \
    "${base[@]}" --seed 0 -o "$out/before$i" --quiet > "$out/before$i.json")
  (cd "$here" && /usr/bin/time -f "now $i wall %e s" "$python" -m x3dsearch.cli step "${base[@]}" --seed 0 \
    --proxy-schedule cpu_proxy -o "$out/now$i" --quiet > "$out/now$i.json")
done

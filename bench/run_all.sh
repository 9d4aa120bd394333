#!/usr/bin/env bash
# `make bench`: every bench/bench_*.py in turn with the given Python; the whole output is also
# written to bench/results/bench-<UTC time>.txt (the README's "What it costs" quotes one such run).
set -euo pipefail
python=${1:?usage: bench/run_all.sh PYTHON}
cd "$(dirname "$0")/.."
mkdir -p bench/results
out="bench/results/bench-$(date -u +%Y%m%dT%H%MZ).txt"
{
    echo "# make bench, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with changes not committed)')"
    echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out"
for script in bench/bench_*.py; do
    echo "== $script" | tee -a "$out"
    started=$(date +%s)
    "$python" -u "$script" 2>&1 | tee -a "$out"
    echo "(took $(( $(date +%s) - started )) s)" | tee -a "$out"
done
echo "written to $out"

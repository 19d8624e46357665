#!/usr/bin/env bash
# Every benchmark at full size, one after the other, so that all figures come from one run
# (what benchmarks/README.md's table quotes). Outputs go to OUT (default: a temp folder).
#     bash benchmarks/run_all.sh [OUT]
set -u
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d -t commit-email-bench-XXXX)}
mkdir -p "$out"
echo "start $(date -u) load $(cut -d' ' -f1-3 /proc/loadavg) rev $(git rev-parse --short HEAD 2>/dev/null)" | tee "$out/meta.txt"
run() {
    local name=$1; shift
    python "$@" > "$out/$name.txt" 2>&1 || echo "!! $name failed (see $out/$name.txt)"
    tail -n 1 "$out/$name.txt"
}
run process benchmarks/process_bench.py --count 2000 --reps 5
run matching benchmarks/matching_bench.py
run rules benchmarks/rules_bench.py
run pop3 benchmarks/pop3_bench.py --count 2000 --rounds 5
run imap benchmarks/imap_bench.py --count 2000 --rounds 3
run smtp benchmarks/smtp_bench.py --count 2000 --reps 2
run memory benchmarks/memory_bench.py
run postgres benchmarks/postgres_bench.py --rounds 5
python benchmarks/process_bench.py --count 2000 --profile 8 > "$out/profile.txt" 2>&1
echo "end $(date -u) load $(cut -d' ' -f1-3 /proc/loadavg); outputs in $out" | tee -a "$out/meta.txt"

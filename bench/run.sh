#!/usr/bin/env bash
# Run the BENCHMARKS.md workloads at T=1 and T=nproc, a few runs each;
# print every JSON line as it comes, then a table of medians (the machines
# are shared and noisy, so one run says little). Fails if any run fails.
#
# usage: bench/run.sh [workload...]     (default: every bench/w*.lua)
# environment:
#   NSHOST    the binary (default build/nshost next to this directory)
#   RUNS      runs per workload and thread count (default 3)
#   THREADS   thread counts to try (default "1 $(nproc)")
#   N_<workload>, e.g. N_w1_spawn_storm=100000: a smaller n for quick runs
#   OUT       also append the JSON lines to this file
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
nshost=${NSHOST:-$here/../build/nshost}
runs=${RUNS:-3}
threads=${THREADS:-"1 $(nproc)"}

# Room for more: W3-W5 become bench/w3_*.lua and so on and are picked up
# here; a peer system (e.g. luv) will get its own runner that prints the
# same JSON lines, and this table will read them alike.
if [ $# -gt 0 ]; then
  workloads=("$@")
else
  workloads=()
  for f in "$here"/w[0-9]*.lua; do
    workloads+=("$(basename "$f" .lua)")
  done
fi

if [ ! -x "$nshost" ]; then
  echo "bench: no nshost binary at $nshost (run make first)" >&2
  exit 1
fi

lines=$(mktemp)
trap 'rm -f "$lines"' EXIT
failed=0
seen=" "

for w in "${workloads[@]}"; do
  nvar="N_$w"
  n=${!nvar:-}
  for t in $threads; do
    # With nproc = 1 the two thread counts are the same: run it once.
    case "$seen" in *" $w/$t "*) continue ;; esac
    seen="$seen$w/$t "
    for r in $(seq 1 "$runs"); do
      rc=0
      out=$("$nshost" -t "$t" "$here/$w.lua" $n) || rc=$?
      [ -n "$out" ] && printf '%s\n' "$out"
      case "$out" in
        *$'\n'*) bad_out=1 ;;
        '{'*'}') bad_out=0; printf '%s\n' "$out" >> "$lines" ;;
        *) bad_out=1 ;;
      esac
      if [ $bad_out -ne 0 ]; then
        echo "bench: $w: expected one JSON line on stdout" >&2
        [ $rc -ne 0 ] || rc=1
      fi
      if [ $rc -ne 0 ]; then
        echo "bench: $w at T=$t, run $r failed (exit $rc)" >&2
        failed=1
      fi
    done
  done
done

if [ -n "${OUT:-}" ]; then cat "$lines" >> "$OUT"; fi

# Medians per workload and thread count, in the order first seen.
# mawk has no asort, hence the small insertion sort.
echo
awk '
  function field(name,   s) {
    if (!match($0, "\"" name "\":[^,}]*")) return "null"
    s = substr($0, RSTART, RLENGTH)
    sub(/^"[^"]*":/, "", s)
    gsub(/"/, "", s)
    return s
  }
  function median(key, name,   n, i, j, v, a) {
    n = 0
    for (i = 1; i <= cnt[key]; i++) {
      v = val[key, name, i]
      if (v == "null") continue
      a[++n] = v + 0
    }
    if (n == 0) return "-"
    for (i = 2; i <= n; i++) {
      v = a[i]
      for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]
      a[j + 1] = v
    }
    if (n % 2) return a[(n + 1) / 2]
    return (a[n / 2] + a[n / 2 + 1]) / 2
  }
  BEGIN { nf = split("wall_s ops_per_s p50_us p99_us rss_kb", names, " ") }
  {
    key = field("workload") " " field("threads")
    if (!(key in cnt)) { order[++nkeys] = key; cnt[key] = 0 }
    i = ++cnt[key]
    for (f = 1; f <= nf; f++) val[key, names[f], i] = field(names[f])
    if (field("ok") != "true") bad[key] = 1
  }
  END {
    printf "%-14s %3s %4s %9s %11s %9s %9s %9s\n", "workload", "T",
           "runs", "wall_s", "ops_per_s", "p50_us", "p99_us", "rss_kb"
    for (k = 1; k <= nkeys; k++) {
      key = order[k]
      split(key, kw, " ")
      printf "%-14s %3s %4d %9s %11s %9s %9s %9s%s\n", kw[1], kw[2],
             cnt[key], median(key, "wall_s"), median(key, "ops_per_s"),
             median(key, "p50_us"), median(key, "p99_us"),
             median(key, "rss_kb"), (key in bad) ? "  FAILED" : ""
    }
  }
' "$lines"

if [ $failed -ne 0 ]; then
  echo "bench: some runs failed" >&2
  exit 1
fi

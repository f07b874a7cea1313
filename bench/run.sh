#!/usr/bin/env bash
# Run the BENCHMARKS.md workloads for nshost and for its peer, LuaJIT
# with luv's uv.new_work pool (bench/luv/), at T=1 and T=nproc, RUNS
# times each.  Within a run the two systems go one after the other, so
# that they share the machine's mood; compare them only as ratios.
# Prints every JSON line as it comes, then a table of medians with the
# ratio nshost/luv, and writes the JSON lines to OUT.  Exits 1 if any run
# failed or computed a wrong answer.
#
# usage: bench/run.sh [workload...]     (default: every bench/w*.lua)
# environment:
#   NSHOST    the binary (default build/nshost next to this directory)
#   PLACEMENT nshost's --placement, random (the default) or p2c
#   LUAJIT    the interpreter for the luv peer (default luajit)
#   SYSTEMS   which to run (default "nshost luv")
#   RUNS      runs per workload, system and thread count (default 3)
#   THREADS   thread counts to try (default "1 $(nproc)")
#   N_<workload>, e.g. N_w1_spawn_storm=100000: a smaller n for quick runs
#   OUT       the JSON lines of this run (default build/bench-results.jsonl
#             next to this directory; overwritten)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
nshost=${NSHOST:-$here/../build/nshost}
placement=${PLACEMENT:-random}
luajit=${LUAJIT:-luajit}
systems=${SYSTEMS:-"nshost luv"}
runs=${RUNS:-3}
threads=${THREADS:-"1 $(nproc)"}
out=${OUT:-$here/../build/bench-results.jsonl}

if [ $# -gt 0 ]; then
  workloads=("$@")
else
  workloads=()
  for f in "$here"/w[0-9]*.lua; do
    workloads+=("$(basename "$f" .lua)")
  done
fi

for s in $systems; do
  case $s in
    nshost)
      if [ ! -x "$nshost" ]; then
        echo "bench: no nshost binary at $nshost (run make first)" >&2
        exit 1
      fi ;;
    luv)
      if ! "$luajit" -e 'require("luv")' 2>/dev/null; then
        echo "bench: '$luajit' cannot require luv; run bash" \
             "bench/deps.sh (Debian: luajit lua-luv)" >&2
        exit 1
      fi ;;
    *) echo "bench: unknown system '$s' (nshost, luv)" >&2; exit 1 ;;
  esac
done

mkdir -p "$(dirname "$out")"
: > "$out"
failed=0
seen=" "

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc)," \
     "$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')," \
     "load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $("$nshost" -v 2>/dev/null | head -1) (git $(git -C "$here/.." \
  describe --always --dirty 2>/dev/null || echo '?'))," \
     "$("$luajit" -v 2>/dev/null | cut -d' ' -f1-2)," \
     "luv $("$luajit" -e 'io.write(require("luv").version_string())' \
  2>/dev/null || echo '?')"

# One run of workload $1 on system $2 with $3 threads; n from $4.
run_one() {
  local w=$1 s=$2 t=$3 n=$4 rc=0 bad res
  if [ "$s" = nshost ]; then
    res=$("$nshost" -t "$t" --placement="$placement" "$here/$w.lua" $n) \
      || rc=$?
  else
    res=$(UV_THREADPOOL_SIZE=$t "$luajit" "$here/luv/$w.lua" $n) \
      || rc=$?
  fi
  [ -n "$res" ] && printf '%s\n' "$res"
  case "$res" in
    *$'\n'*) bad=1; echo "bench: $w: more than one line" >&2 ;;
    '{'*'"ok":true}') bad=0; printf '%s\n' "$res" >> "$out" ;;
    '{'*'}') bad=1; printf '%s\n' "$res" >> "$out" ;;
    *) bad=1; echo "bench: $w: expected a JSON line" >&2 ;;
  esac
  [ "$bad" -eq 0 ] || [ "$rc" -ne 0 ] || rc=1
  if [ "$rc" -ne 0 ]; then
    echo "bench: $w on $s at T=$t failed (exit $rc)" >&2
    failed=1
  fi
}

for w in "${workloads[@]}"; do
  nvar="N_$w"
  n=${!nvar:-}
  for t in $threads; do
    # With nproc = 1 the two thread counts are the same: run it once.
    case "$seen" in *" $w/$t "*) continue ;; esac
    seen="$seen$w/$t "
    for r in $(seq 1 "$runs"); do
      for s in $systems; do
        if [ "$s" = luv ] && [ ! -f "$here/luv/$w.lua" ]; then
          [ "$r" -eq 1 ] && echo "bench: no luv version of $w" >&2
          continue
        fi
        run_one "$w" "$s" "$t" "$n"
      done
    done
  done
done

echo
awk -f "$here/table.awk" "$out"

if [ $failed -ne 0 ]; then
  echo "bench: some runs failed or gave a wrong answer" >&2
  exit 1
fi

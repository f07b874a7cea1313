# The table of medians that bench/run.sh prints from its JSON lines:
# one row per workload, metric and thread count, nshost and luv side by
# side, and their ratio.  mawk has no asort, hence the insertion sort.

function field(name,   s) {
  if (!match($0, "\"" name "\":[^,}]*")) return "null"
  s = substr($0, RSTART, RLENGTH)
  sub(/^"[^"]*":/, "", s)
  gsub(/"/, "", s)
  return s
}

function median(key,   n, i, j, v, a) {
  n = 0
  for (i = 1; i <= cnt[key]; i++) {
    v = val[key, i]
    if (v == "null") continue
    a[++n] = v + 0
  }
  if (n == 0) return ""
  for (i = 2; i <= n; i++) {
    v = a[i]
    for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]
    a[j + 1] = v
  }
  if (n % 2) return a[(n + 1) / 2]
  return (a[n / 2] + a[n / 2 + 1]) / 2
}

function fmt(v) {
  if (v == "") return "-"
  if (v >= 100 || v <= -100) return sprintf("%.0f", v)
  return sprintf("%.3g", v)
}

BEGIN {
  # The metrics worth a row, per workload, and which way is better.
  m["spawn_storm"] = "ops_per_s rss_kb"
  m["roundtrip"] = "p50_us p99_us rss_kb"
  m["fanout"] = "efficiency speedup rss_kb"
  m["skew"] = "p50_us p99_us p999_us makespan_s rss_kb"
  m["closure_cost"] = "ops_per_s rss_kb"
  hi["ops_per_s"] = hi["efficiency"] = hi["speedup"] = 1
  nall = split("wall_s ops_per_s p50_us p99_us p999_us makespan_s " \
               "speedup efficiency rss_kb", all, " ")
}

/^\{/ {
  w = field("workload"); s = field("system"); t = field("threads")
  if (!((w, t) in rows)) { rows[w, t] = 1; order[++nrows] = w SUBSEP t }
  if (field("ok") != "true") bad[w, s, t] = 1
  runs[w, s, t]++
  for (f = 1; f <= nall; f++) {
    key = w SUBSEP s SUBSEP t SUBSEP all[f]
    val[key, ++cnt[key]] = field(all[f])
  }
}

END {
  print "Medians; ratio = nshost/luv.  ^ higher is better (ratio > 1" \
        " favours nshost);"
  print "v lower is better (ratio < 1 favours nshost).  rss_kb is peak" \
        " RSS of the process."
  printf "%-13s %-12s %3s %4s %11s %11s %8s  %s\n", "workload", "metric",
         "T", "runs", "nshost", "luv", "ratio", "better"
  for (r = 1; r <= nrows; r++) {
    split(order[r], wt, SUBSEP)
    w = wt[1]; t = wt[2]
    list = (w in m) ? m[w] : "ops_per_s p50_us p99_us rss_kb"
    nm = split(list, ms, " ")
    for (k = 1; k <= nm; k++) {
      me = ms[k]
      a = median(w SUBSEP "nshost" SUBSEP t SUBSEP me)
      b = median(w SUBSEP "luv" SUBSEP t SUBSEP me)
      if (a == "" && b == "") continue
      ratio = (a != "" && b != "" && b != 0) ? sprintf("%.2f", a / b) : "-"
      win = "-"
      if (ratio != "-" && a != b)
        win = ((me in hi) == (a > b)) ? "nshost" : "luv"
      note = ((w, "nshost", t) in bad || (w, "luv", t) in bad) ? \
             "  FAILED" : ""
      n_runs = runs[w, "nshost", t] + 0 "/" runs[w, "luv", t] + 0
      printf "%-13s %-12s %3s %4s %11s %11s %8s  %s%s\n", w,
             me ((me in hi) ? " ^" : " v"), t, n_runs, fmt(a), fmt(b),
             ratio, win, note
    }
  }
}

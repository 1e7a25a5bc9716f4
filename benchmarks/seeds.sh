#!/usr/bin/env bash
# Train one agent on one env for several seeds (two at a time) and print one line per run plus medians.
# Usage: benchmarks/seeds.sh AGENT ENV "SEEDS" OUTDIR [extra train args...]
set -euo pipefail
agent=$1 env=$2 seeds=$3 out=$4; shift 4
mkdir -p "$out"
printf '%s\n' $seeds | xargs -P 2 -I{} sh -c \
  "python -m rlagents.train --agent $agent --env $env --seed {} --run-dir $out/seed{} --no-progress $* > $out/seed{}.log 2>&1 || echo 'seed {} failed'"
python - "$out" <<'PY'
import json, statistics, sys, pathlib
rows = [json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).glob("seed*/summary.json"))]
for s in rows:
    curve = " ".join(f"{e['return_mean']:.0f}" for e in s["evaluations"])
    print(f"seed {s['seed']}: final {s['eval_return_mean']:8.1f}  solved@{s['solved_at_step']} "
          f"({s['solved_at_time_s']} s)  {s['env_steps_per_s']:.0f} steps/s  train {s['train_time_s']} s | {curve}")
def med(key):
    vals = [s[key] if s[key] is not None else float("inf") for s in rows]
    return statistics.median(vals) if vals else None
thr = rows[0]["reward_threshold"] if rows else None
ok = sum(1 for s in rows if thr is not None and s["eval_return_mean"] >= thr)
print(f"final>=threshold: {ok}/{len(rows)}  median solved_at_step {med('solved_at_step')}  "
      f"median solved_at_time_s {med('solved_at_time_s')}  median steps/s {med('env_steps_per_s')}")
PY

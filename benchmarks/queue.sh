#!/usr/bin/env bash
# The benchmark queue, in priority order, one run at a time: a recorded result is skipped, an interrupted
# run continues from its last checkpoint (r5.py resumes). Start it in the background from the repository
# root and give the same command again after a stop:
#     nohup benchmarks/queue.sh > benchmarks/queue.log 2>&1 &
# Each line is "protocol method seed"; first_task lines run benchmarks/first_task.py for one seed.
set -u
cd "$(dirname "$0")/.."
queue() {
  cat <<'RUNS'
r5 finetune 1993
r5 replay 1993
r5 lwf 1993
r5 icarl 1993
r5 finetune 1994
r5 replay 1994
r5 lwf 1994
r5 icarl 1994
r5 finetune 1995
r5 replay 1995
r5 lwf 1995
r5 icarl 1995
first_task - 1993
first_task - 1994
first_task - 1995
first_task - 1996
first_task - 1997
r5 bic 1993
r5 wa 1993
r5 joint 1993
r5 bic 1994
r5 wa 1994
r5 joint 1994
r5 bic 1995
r5 wa 1995
r5 joint 1995
r5 ewc 1993
r5 e2e 1993
r5 lucir 1993
r5 lwf_coreset 1993
RUNS
  # Runs of methods that exist only once their configs are there (data-free, parameter isolation).
  for protocol_dir in configs/reproduce/r5df configs/reproduce/t5; do
    [ -d "$protocol_dir" ] || continue
    for seed in 1993 1994 1995; do
      for config in "$protocol_dir"/*.yaml; do
        [ -e "$config" ] && echo "$(basename "$protocol_dir") $(basename "$config" .yaml) $seed"
      done
    done
  done
}
queue | while read -r protocol method seed; do
  if [ "$protocol" = first_task ]; then
    python benchmarks/first_task.py --seeds "$seed" || exit 1
    continue
  fi
  [ -f "benchmarks/results/$protocol/$method-seed$seed.json" ] && continue
  [ -f "configs/reproduce/$protocol/$method.yaml" ] || { echo "skip $protocol $method: no config"; continue; }
  echo "$(date -u +%FT%TZ) start $protocol $method $seed"
  python benchmarks/r5.py "$method" --seed "$seed" --protocol "$protocol" || exit 1
done

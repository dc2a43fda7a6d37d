#!/usr/bin/env bash
# The benchmark queue, in priority order, one run at a time: a recorded result is skipped, an interrupted
# run continues from its last checkpoint (r5.py resumes). Start it in the background from the repository
# root and give the same command again after a stop:
#     nohup benchmarks/queue.sh > benchmarks/queue.log 2>&1 &
# Each line is "protocol method seed"; first_task lines run benchmarks/first_task.py for one seed. A file
# benchmarks/queue.stop makes the queue stop before its next run.
set -u
cd "$(dirname "$0")/.."
queue() {
  # The data-free runs first, the ones that finish within a session first: DeepInversion 1993 continues
  # from its checkpoint after task 3 (about 35 min), LwF.MC takes about 30 min, ABD about 95. An
  # interrupted run resumes from its checkpoint when the worktree's benchmarks/runs/ is still there.
  # Then the rest, recorded runs skipped.
  cat <<'RUNS'
r5df deepinversion 1993
r5df lwf_mc 1994
r5df lwf_mc 1995
r5df abd 1994
r5df abd 1995
t5 cpg_goals 1993
t5 cpg 1993
t5 packnet 1993
t5 piggyback 1993
t5 individual 1993
t5 finetune 1993
t5 cpg 1994
t5 packnet 1994
t5 cpg 1995
t5 packnet 1995
r5 finetune 1993
r5 replay 1993
r5df abd 1993
r5df lwf_mc 1993
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
r5df lwf_synthetic 1993
RUNS
}
queue | while read -r protocol method seed; do
  [ -f benchmarks/queue.stop ] && { echo "stopped by benchmarks/queue.stop"; exit 0; }
  if [ "$protocol" = first_task ]; then
    python benchmarks/first_task.py --seeds "$seed" || exit 1
    continue
  fi
  [ -f "benchmarks/results/$protocol/$method-seed$seed.json" ] && continue
  [ -f "configs/reproduce/$protocol/$method.yaml" ] || { echo "skip $protocol $method: no config"; continue; }
  echo "$(date -u +%FT%TZ) start $protocol $method $seed"
  python benchmarks/r5.py "$method" --seed "$seed" --protocol "$protocol" || exit 1
done

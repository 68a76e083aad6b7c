#!/usr/bin/env bash
# Long explorations of the deterministic cluster simulation (crates/skiff-driver/tests/sim.rs):
# many seeds, in every profile, at seed bases no test uses. CI runs a fixed slice of seeds
# (`npm run test:rust`); this looks further. Every failure is printed with the command that
# replays it (with a trace of its last events), so that a failing seed can become a named
# regression test (a scripted scenario in crates/skiff-driver/tests/sim.rs, or a minimal core
# reproduction in crates/skiff-core/tests/regressions.rs).
#
#   scripts/sim-explore.sh                       # 50,000 seeds x 5,000 steps per profile, base 1,000,000
#   SEEDS=200000 BASES="3000000 7000000" scripts/sim-explore.sh
#   PROFILES="slowdisk membership" STEPS=20000 SEEDS=5000 scripts/sim-explore.sh
#
# Settings (environment):
#   PROFILES  profiles to run; `name:N` runs N seeds of that one instead of SEEDS
#             [default membership snapshots slowdisk big]
#   BASES     first seed of each range     [1000000]
#   SEEDS     seeds per profile and base   [50000]
#   STEPS     events per run before healing [5000]
#   CHUNK     seeds per test process; progress and failures are reported per chunk [10000]
#   NICE      niceness of the runs (the simulation uses every core) [10]
#   LOG_DIR   where each chunk's full output goes [a fresh directory under ${TMPDIR:-/tmp},
#             removed again if every seed passed]
#
# Exit status: 0 if every seed passed, 1 if any failed, 2 on a build or usage error.
set -u

PROFILES=${PROFILES:-"default membership snapshots slowdisk big"}
BASES=${BASES:-1000000}
SEEDS=${SEEDS:-50000}
STEPS=${STEPS:-5000}
CHUNK=${CHUNK:-10000}
NICE=${NICE:-10}

for v in SEEDS STEPS CHUNK NICE; do
  case ${!v} in
    '' | *[!0-9]*) echo "sim-explore: $v must be a whole number, not '${!v}'" >&2; exit 2 ;;
  esac
done
for b in $BASES; do
  case $b in
    *[!0-9]*) echo "sim-explore: BASES must be whole numbers, not '$b'" >&2; exit 2 ;;
  esac
done
[ "$CHUNK" -gt 0 ] || { echo "sim-explore: CHUNK must be positive" >&2; exit 2; }

cd "$(dirname "$0")/.." || exit 2
own_logs=
if [ -z "${LOG_DIR:-}" ]; then
  LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sim-explore.XXXXXX") || exit 2
  own_logs=1
fi
mkdir -p "$LOG_DIR" || exit 2

echo "sim-explore: building the simulation (cargo --profile ci)"
if ! nice -n "$NICE" cargo test -q -p skiff-driver --profile ci --test sim --no-run --message-format=json \
  >"$LOG_DIR/build.json" 2>"$LOG_DIR/build.log"; then
  cat "$LOG_DIR/build.log" >&2
  exit 2
fi
# Run a copy of the test binary: edits and rebuilds while the exploration runs do not change it.
exe=$(grep -o '"executable":"[^"]*/sim-[^"]*"' "$LOG_DIR/build.json" | tail -n 1 | sed 's/^"executable":"//; s/"$//')
if [ -z "$exe" ] || ! cp "$exe" "$LOG_DIR/sim"; then
  echo "sim-explore: could not find the built simulation (see $LOG_DIR/build.json)" >&2
  exit 2
fi
echo "sim-explore: commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)'), logs in $LOG_DIR"

started=$(date +%s)
failed=0
replays=()
for spec in $PROFILES; do
  profile=${spec%%:*}
  count=$SEEDS
  [ "$spec" != "$profile" ] && count=${spec#*:}
  case $count in
    '' | *[!0-9]*) echo "sim-explore: bad seed count in '$spec'" >&2; exit 2 ;;
  esac
  for base in $BASES; do
    done_seeds=0
    while [ "$done_seeds" -lt "$count" ]; do
      n=$((count - done_seeds))
      [ "$n" -gt "$CHUNK" ] && n=$CHUNK
      from=$((base + done_seeds))
      to=$((from + n - 1))
      log="$LOG_DIR/$profile-$from-$to.log"
      env_profile=()
      [ "$profile" != default ] && env_profile=(SIM_PROFILE="$profile")
      env "${env_profile[@]}" SIM_SEEDS="$n" SIM_SEED_BASE="$from" SIM_STEPS="$STEPS" \
        nice -n "$NICE" "$LOG_DIR/sim" random_clusters --exact --nocapture >"$log" 2>&1
      status=$?
      summary=$(grep -m1 '^simulated ' "$log" | sed 's/: .*//')
      if [ "$status" -eq 0 ]; then
        printf '%-10s seeds %d..%d: ok (%s)\n' "$profile" "$from" "$to" "$summary"
      else
        seeds=$(grep -E '^seed [0-9]+: ' "$log" | sed -E 's/^seed ([0-9]+): .*/\1/')
        if [ -z "$seeds" ]; then
          printf '%-10s seeds %d..%d: the run itself failed (status %d); see %s\n' "$profile" "$from" "$to" "$status" "$log"
          failed=$((failed + 1))
        else
          nfail=$(printf '%s\n' "$seeds" | wc -l)
          printf '%-10s seeds %d..%d: %d FAILED (%s)\n' "$profile" "$from" "$to" "$nfail" "$summary"
          grep -E '^seed [0-9]+: ' "$log" | sed 's/^/    /'
          failed=$((failed + nfail))
          for s in $seeds; do
            replays+=("${env_profile[*]:+${env_profile[*]} }SIM_SEED=$s SIM_STEPS=$STEPS cargo test -p skiff-driver --profile ci --test sim random_clusters -- --nocapture")
          done
        fi
      fi
      done_seeds=$((done_seeds + n))
    done
  done
done

elapsed=$(($(date +%s) - started))
echo
if [ "$failed" -eq 0 ]; then
  echo "sim-explore: all seeds passed: profiles [$PROFILES], bases [$BASES], $SEEDS seeds unless given, $STEPS steps, in ${elapsed}s"
  # Nothing to look at: remove what this run created (a LOG_DIR given by the caller stays).
  [ -n "$own_logs" ] && rm -rf "$LOG_DIR"
  exit 0
fi
echo "sim-explore: $failed failure(s) in ${elapsed}s (logs: $LOG_DIR). Replay each with a trace of its last events:"
for r in "${replays[@]}"; do
  echo "  $r"
done
exit 1

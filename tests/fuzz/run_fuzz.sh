#!/usr/bin/env bash
# Runs every fuzz target in turn (one core), then merges what it found into the committed corpus.
#   tests/fuzz/run_fuzz.sh BUILD_FUZZ_DIR SEEDS_DIR WORK_DIR SECONDS_PER_TARGET [TARGET...]
# BUILD_FUZZ_DIR: a CKPT_BUILD_FUZZERS build (tests/fuzz/README.md); SEEDS_DIR: from make_seeds.py.
# Prints per target: executions, coverage, features, and any crash/leak/timeout files.
set -u
build=$1 seeds=$2 work=$3 seconds=$4
shift 4
here=$(cd "$(dirname "$0")" && pwd)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(fuzz_index fuzz_safetensors fuzz_pickle fuzz_pytorch fuzz_flax fuzz_numpy fuzz_boost
  fuzz_ckpt_h5 fuzz_detect fuzz_zip fuzz_boost_memory fuzz_sharded fuzz_options fuzz_pickle_gen fuzz_json_gen fuzz_dcp)
dict_for() {
  case $1 in
    fuzz_index|fuzz_safetensors|fuzz_sharded) echo json ;;
    fuzz_pickle) echo pickle ;;
    fuzz_pytorch|fuzz_dcp) echo "zip pickle" ;;
    fuzz_flax) echo msgpack ;;
    fuzz_numpy|fuzz_zip) echo zip ;;
    fuzz_boost|fuzz_boost_memory) echo boost ;;
    fuzz_ckpt_h5) echo "hdf5 json" ;;
    fuzz_detect|fuzz_options) echo "hdf5 json zip pickle msgpack boost" ;;
    *) echo "" ;;
  esac
}
mkdir -p "$work"
for t in "${targets[@]}"; do
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
  dict="$work/$t/dict"
  : > "$dict"
  for d in $(dict_for "$t"); do cat "$here/dict/$d.dict" >> "$dict"; done
  dict_arg=()
  [ -s "$dict" ] && dict_arg=(-dict="$dict")
  # HDF5 mallocs what a malformed object header claims (13 GB seen) before it finds the address
  # past the end of the file and frees it; in the isolation child that is libFuzzer's malloc limit,
  # not a finding (the memory is never touched: 16 MB resident replaying those inputs).
  case $t in fuzz_ckpt_h5|fuzz_detect|fuzz_options) dict_arg+=(-malloc_limit_mb=65536) ;; esac
  committed="$here/corpus/$t"
  mkdir -p "$committed"
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    LSAN_OPTIONS=suppressions="$here/lsan.supp" \
    "$build/$t" -max_total_time="$seconds" -rss_limit_mb=2560 -timeout=30 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$work/$t/artifacts/" "${dict_arg[@]}" "$work/$t/corpus" "$committed" "$seeds/$t" \
    > "$work/$t/log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$t/log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$work/$t/log" | tail -1)
  ft=$(grep -o 'ft: [0-9]*' "$work/$t/log" | tail -1)
  found=$(ls "$work/$t/artifacts" | tr '\n' ' ')
  echo "$t: rc=$rc execs=${execs:-?} ${cov:-cov: ?} ${ft:-ft: ?} findings: ${found:-none}"
done

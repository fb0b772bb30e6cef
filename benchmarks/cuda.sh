#!/usr/bin/env bash
# The CUDA table in one short run on a lent GPU (eager rows first, then torch.compile;
# each result is appended as it comes, so a run stopped early keeps what it measured):
#
#     bash benchmarks/cuda.sh OUT_DIR          # device tool: bash benchmarks/cuda.sh "$OUT"
#
# Every recipe at the seed's batch sizes through bench_train.py (the real train_step, in-memory
# loader): fp32 and bf16, each in channels-last (gankit's layout) and contiguous NCHW, then bf16
# channels-last under torch.compile. Each configuration runs in its own process with a time limit;
# one that fails or runs out is written down as such and the others go on. Writes OUT_DIR/cuda.jsonl
# (one JSON object per configuration), OUT_DIR/cuda-machine.json and OUT_DIR/cuda.err; turn them into
# a table with `python benchmarks/cuda_table.py OUT_DIR`. STEPS_SCALE=0.05 DEVICE=cpu LIMIT=60 checks
# the script itself on a CPU.
set -u
out=${1:-benchmarks/results/cuda}
mkdir -p "$out"
: >"$out/cuda.jsonl"
: >"$out/cuda.err"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

"$py" - >"$out/cuda-machine.json" <<'EOF'
import json, platform, torch
m = {"torch": torch.__version__, "python": platform.python_version(), "gpu": None}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    m.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),
             multiprocessors=p.multi_processor_count, cuda=torch.version.cuda,
             cudnn=torch.backends.cudnn.version())
print(json.dumps(m))
EOF
cat "$out/cuda-machine.json"

one() { # recipe batch precision memory-format steps [compile]
    local cfg=(--one --recipe "$1" --batch-size "$2" --loader memory --precision "$3" --steps "$5"
        --warmup "${WARMUP:-5}" --device "${DEVICE:-cuda}")
    [ -n "${6:-}" ] && cfg+=(--compile --warmup 8)
    local line
    line=$(GANKIT_CPU_CHANNELS_LAST=$([ "$4" = contiguous ] && echo off || echo on) timeout "${LIMIT:-150}" "$py" benchmarks/bench_train.py "${cfg[@]}" \
        2>>"$out/cuda.err" | tail -n 1)
    case $line in
    "{"*) echo "$line" ;;
    *) printf '{"recipe": "%s", "batch_size": %s, "precision": "%s", "memory_format": "%s", "compile": %s, "failed": true}\n' \
        "$1" "$2" "$3" "$4" "$([ -n "${6:-}" ] && echo '"default"' || echo null)" ;;
    esac | tee -a "$out/cuda.jsonl"
}

steps() { "$py" -c "print(max(1, round($1 * ${STEPS_SCALE:-1})))"; }

# recipe, the seed's batch, timed steps
for spec in "dcgan 512 40" "dcgan 64 100" "ssgan 100 100" "pix2pix 1 60" "cyclegan 1 30"; do
    set -- $spec
    for precision in fp32 bf16; do
        for layout in channels_last contiguous; do
            one "$1" "$2" "$precision" "$layout" "$(steps "$3")"
        done
    done
done
for spec in "dcgan 512 40" "ssgan 100 100" "pix2pix 1 60" "cyclegan 1 30"; do
    set -- $spec
    one "$1" "$2" bf16 channels_last "$(steps "$3")" compile
done

#!/usr/bin/env bash
# A transferable ArBG at GPU scale (issue 15): MD of all 20 single residues and 190 residue pairs
# on a machine's CPU cores, then one bigger sequence-conditioned network trained on a GPU, checked
# zero-shot on held-out sequences. Resumable: run it again after an interruption.
# Usage: bash examples/transferable_gpu.sh [WORKDIR]   (WORKERS=16 DEVICE=cuda MINUTES=120 NGPU=1 by default;
#        AA, HELD_OUT, NS, BASIN_STARTS, N_PROPOSALS, TICA_LAG and the network's N_LAYER, N_HEAD, D_MODEL shrink it for a
#        toy run on a CPU, e.g. AA="A G S" HELD_OUT="GA" NS=0.04 BASIN_STARTS=2 MINUTES=1 DEVICE=cpu N_PROPOSALS=200 TICA_LAG=2
#        N_LAYER=1 N_HEAD=2 D_MODEL=32 WORKERS=2; BASELINE_MINUTES (default MINUTES, equal wall time) is each held-out
#        sequence's single-molecule baseline)
# Run end to end at the toy size above on a 2-core CPU (4.7 min, session 22); not yet at size: no GPU machine was
# lent to the sessions that wrote it (docs/benchmarks.md sections 16 and 27).
set -euo pipefail
WORK=${1:-transferable_gpu}
WORKERS=${WORKERS:-16}
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-120}
AA=${AA:-"A R N D C Q E G H I L K M F P S T W Y V"}
HELD_OUT=${HELD_OUT:-"TQ KW DY FH"}  # never trained on: pairs whose residues the model knows
NS=${NS:-1}
BASIN_STARTS=${BASIN_STARTS:-20}
N_PROPOSALS=${N_PROPOSALS:-100000}
TICA_LAG=${TICA_LAG:-20}
BASELINE_MINUTES=${BASELINE_MINUTES:-$MINUTES}
N_LAYER=${N_LAYER:-8}; N_HEAD=${N_HEAD:-8}; D_MODEL=${D_MODEL:-384}
PAIRS=()
for a in $AA; do for b in $AA; do
  if [[ "$a" < "$b" ]] && [[ " $HELD_OUT " != *" $a$b "* ]]; then PAIRS+=("$a$b"); fi
done; done
arbg peptide-md --sequences $AA "${PAIRS[@]}" $HELD_OUT --ns "$NS" --report-ps 0.5 --basin-starts "$BASIN_STARTS" \
    --workers "$WORKERS" --output "$WORK/data" --quiet
train=(); for s in $AA "${PAIRS[@]}"; do train+=("$WORK/data/md_$s"); done
valid=(); for s in $HELD_OUT; do valid+=("$WORK/data/md_$s"); done
# NGPU > 1: torchrun shares each step's molecules out among the GPUs (molecules-per-step a multiple of NGPU)
NGPU=${NGPU:-1}
if [ "$NGPU" -gt 1 ]; then RUN=(torchrun --standalone --nproc_per_node "$NGPU" "$(command -v arbg)"); else RUN=(arbg); fi
"${RUN[@]}" train-transferable --md "${train[@]}" --validation-md "${valid[@]}" --device "$DEVICE" \
    --n-layer "$N_LAYER" --n-head "$N_HEAD" --d-model "$D_MODEL" --batch-size 256 --molecules-per-step 16 --learning-rate 6e-4 \
    --warmup-steps 500 --ema-decay 0.999 --eval-interval 250 --n-steps 1000000 --time-budget-s $((MINUTES * 60)) \
    --output "$WORK/model"
python benchmarks/transferable_zero_shot.py --model "$WORK/model/model.safetensors" --md "${valid[@]}" \
    --n "$N_PROPOSALS" --lag "$TICA_LAG" --baseline-minutes "$BASELINE_MINUTES" --device "$DEVICE" --output "$WORK/zero_shot"

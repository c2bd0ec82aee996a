#!/usr/bin/env bash
# A transferable ArBG at GPU scale (issue 15): MD of all 20 single residues and 190 residue pairs
# on a machine's CPU cores, then one bigger sequence-conditioned network trained on a GPU, checked
# zero-shot on held-out sequences. Resumable: run it again after an interruption.
# Usage: bash examples/transferable_gpu.sh [WORKDIR]   (WORKERS=16 DEVICE=cuda MINUTES=120 NGPU=1 by default)
# Not run yet: no GPU machine was lent to the session that wrote it (docs/benchmarks.md section 16).
set -euo pipefail
WORK=${1:-transferable_gpu}
WORKERS=${WORKERS:-16}
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-120}
AA="A R N D C Q E G H I L K M F P S T W Y V"
HELD_OUT="TQ KW DY FH"  # never trained on: pairs whose residues the model knows
PAIRS=()
for a in $AA; do for b in $AA; do
  if [[ "$a" < "$b" ]] && [[ " $HELD_OUT " != *" $a$b "* ]]; then PAIRS+=("$a$b"); fi
done; done
arbg peptide-md --sequences $AA "${PAIRS[@]}" $HELD_OUT --ns 1 --report-ps 0.5 --basin-starts 20 \
    --workers "$WORKERS" --output "$WORK/data" --quiet
train=(); for s in $AA "${PAIRS[@]}"; do train+=("$WORK/data/md_$s"); done
valid=(); for s in $HELD_OUT; do valid+=("$WORK/data/md_$s"); done
# NGPU > 1: torchrun shares each step's molecules out among the GPUs (molecules-per-step a multiple of NGPU)
NGPU=${NGPU:-1}
if [ "$NGPU" -gt 1 ]; then RUN=(torchrun --standalone --nproc_per_node "$NGPU" "$(command -v arbg)"); else RUN=(arbg); fi
"${RUN[@]}" train-transferable --md "${train[@]}" --validation-md "${valid[@]}" --device "$DEVICE" \
    --n-layer 8 --n-head 8 --d-model 384 --batch-size 256 --molecules-per-step 16 --learning-rate 6e-4 \
    --warmup-steps 500 --ema-decay 0.999 --eval-interval 250 --n-steps 1000000 --time-budget-s $((MINUTES * 60)) \
    --output "$WORK/model"
python benchmarks/transferable_zero_shot.py --model "$WORK/model/model.safetensors" --md "${valid[@]}" \
    --n 100000 --baseline-minutes "$MINUTES" --device "$DEVICE" --output "$WORK/zero_shot"

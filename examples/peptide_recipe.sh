#!/usr/bin/env bash
# The README's "2 ns of MD, no umbrella frames" recipe for a capped peptide in implicit solvent
# (OBC1, 310 K), end to end: MD for training, an independent reference MD, training,
# self-training, and the evaluation against the reference (ESS/N, E-W2, T-W2, TICA-W2, basin
# populations by importance sampling and by plain MD, ArBGMove acceptance).
#
#   bash examples/peptide_recipe.sh SEQUENCE [OUTPUT_FOLDER]
#
# SEQUENCE is one-letter codes (AAA is Ace-Ala-Ala-Ala-Nme). Every step resumes where it stopped,
# so the same command continues an interrupted run. Settings come from the environment:
#
#   THREADS=1          torch threads and OpenMM CPU threads of every step
#   DEVICE=cpu         torch device of training and sampling (cuda on a GPU machine)
#   HOT_NS=0.2         MD at 1000 K that visits the basins (ns)
#   MD_NS=1.5          MD at 310 K for training (ns)
#   MD_RUNS=1          split MD_NS over this many runs, each from the built structure with its own seed, so
#                      that no basin holds most of the training MD because one run fell into it (a
#                      tetrapeptide's single 1.5 ns run spent half its frames in alpha_L3, a basin of about 1 %:
#                      docs/benchmarks.md section 25; with MD_RUNS=4 none was, and the trained model's ESS/N
#                      rose from 0.3-0.4 % to 0.4-0.7 %: section 28)
#   N_STARTS=40        seeded segments at 310 K: k-means centres of the hot run, each with every residue's
#                      (phi, psi) rotated into one of 5 Ramachandran basins (a multiple of 5)
#   SEEDED_NS=0.2      their total length (ns)
#   REF_NS=2.5         independent reference MD at 310 K (ns), another seed; 0 skips the reference
#   N_LAYER=3 N_HEAD=4 D_MODEL=96 TRAIN_STEPS=1500    the network and its training
#   TRAIN_MINUTES=0    if > 0, the training schedule (warm-up and cosine decay) is fitted to this many
#                      minutes instead of TRAIN_STEPS (arbg train --time-budget-s)
#   N_BINS=256         bins per coordinate: the bins alone cap ESS/N (uniform inside a bin) at about
#                      72 % for AAA, 46 % for AAAAAA and 15 % for chignolin with 256; 92, 86 and 57 %
#                      with 512 (python benchmarks/bin_noise.py; docs/benchmarks.md section 19)
#   ROUNDS=8 PROPOSALS=50000                          self-training rounds and proposals per round
#   N_EVAL=10000       proposals of the evaluation
#   TICA_LAG=100       TICA lag of the evaluation's TICA-W2, in reference frames (1 ps apart); a toy run with
#                      a short reference (REF_NS below 0.1) needs a smaller one
#   UMBRELLA=0         1: also an umbrella reference for the middle residue's alpha_L (phi > 0), which the
#                      reference MD hardly visits: 36 stiff windows of 100 ps on its phi, each started from a frame
#                      of the reference MD (about 4 ns of MD; 45 min on one thread for AAA); and, where the middle
#                      residue has a side chain (not G, A), metadynamics on its (psi, chi1) for the rotamer
#                      populations (1 ns building the bias, 4 ns under it frozen, at 1 fs; about 30 min for Ace-Ile-Nme)
#
# --start-basins rotates every residue into every backbone basin and every chi1 into every rotamer
# (p, t, m), so the model sees rotamers that MD at 310 K does not cross in its length; the states
# chi1tK (trans rotamer, |chi1| > 120 deg) are reported for every residue with a side chain.
#
# Capped tri-alanine on two CPU cores (THREADS=2, session 19, today's defaults, from a fresh clone):
# 17 min of MD for training, 27 min of reference MD (both run beside the script with its own lines
# on the second core; the script skips a complete `arbg md` output), 37 min of training, 8
# self-training rounds of about 5 min, 3 min of evaluation; ESS/N at 10^4 proposals 6.7-7.8 %
# trained, 9.3-17.6 % self-trained, ArBGMove acceptance 24 %, every alpha and alpha_L basin within
# 2.1 sigma of the independent references (docs/benchmarks.md section 24). On a GPU machine, for
# the larger peptides of the ArBG paper's
# Table 1 (hexa-alanine AAAAAA, chignolin GYDPETGTWG), more MD and a larger network (these
# settings are a starting point: no GPU run of this script has been measured yet):
#
#   DEVICE=cuda THREADS=4 MD_NS=10 SEEDED_NS=1 N_STARTS=100 REF_NS=20 N_LAYER=6 D_MODEL=256 N_BINS=512 \
#       TRAIN_STEPS=20000 PROPOSALS=200000 N_EVAL=200000 bash examples/peptide_recipe.sh AAAAAA
#
# and N_BINS=1024 for chignolin, whose 435 coordinates the bins alone would otherwise cost most of the ESS.
set -euo pipefail

SEQ=${1:?usage: bash examples/peptide_recipe.sh SEQUENCE [OUTPUT_FOLDER]}
OUT=${2:-recipe_$SEQ}
THREADS=${THREADS:-1} DEVICE=${DEVICE:-cpu}
HOT_NS=${HOT_NS:-0.2} MD_NS=${MD_NS:-1.5} N_STARTS=${N_STARTS:-40} SEEDED_NS=${SEEDED_NS:-0.2} REF_NS=${REF_NS:-2.5}
N_LAYER=${N_LAYER:-3} N_HEAD=${N_HEAD:-4} D_MODEL=${D_MODEL:-96} TRAIN_STEPS=${TRAIN_STEPS:-1500} N_BINS=${N_BINS:-256}
MD_RUNS=${MD_RUNS:-1} ROUNDS=${ROUNDS:-8} PROPOSALS=${PROPOSALS:-50000} N_EVAL=${N_EVAL:-10000} UMBRELLA=${UMBRELLA:-0} TICA_LAG=${TICA_LAG:-100}
TRAIN_MINUTES=${TRAIN_MINUTES:-0}
export OPENMM_CPU_THREADS=$THREADS

SYSTEM=peptide:$SEQ
N=${#SEQ}
# states over the peptide's own backbone dihedrals: residue i of the sequence is residue i+1 (Ace is 1)
LEFT="" STATES=()
for ((r = 2; r <= N + 1; r++)); do
    LEFT+="${LEFT:+ or }phi$r > 0"
    STATES+=(--state "alpha$r=phi$r < 0 and -120 <= psi$r <= 50" --state "alphaL$r=phi$r > 0")
    case ${SEQ:r-2:1} in G | A) ;; *) STATES+=(--state "chi1t$r=abs(chi1_$r) > 120") ;; esac  # side chain's trans rotamer
done
STATES+=(--state "phiL=$LEFT")

mkdir -p "$OUT"
cd "$OUT"
run() { echo "+ arbg $*"; arbg "$@"; }
COMMON=(--threads "$THREADS")
SCHEDULE=(--n-steps "$TRAIN_STEPS")
if [ "$TRAIN_MINUTES" != "0" ]; then SCHEDULE=(--time-budget-s "$((TRAIN_MINUTES * 60))"); fi

run md --system "$SYSTEM" --temperatures 1000 --ns "$HOT_NS" --report-ps 0.2 --seed 1 --output hot "${COMMON[@]}" --quiet
# training MD at 310 K: one run (folder md), or MD_RUNS runs of MD_NS / MD_RUNS each (md_1, md_2, ...; seeds 2, 12, ...)
MD_TRAJ=() MD_WEIGHTS=() MD_TEMPS=()
RUN_NS=$(python -c "print($MD_NS / $MD_RUNS)")
for ((i = 1; i <= MD_RUNS; i++)); do
    DIR=md; [ "$MD_RUNS" = "1" ] || DIR=md_$i
    run md --system "$SYSTEM" --temperatures 310 --ns "$RUN_NS" --report-ps 0.01 --seed $((10 * i - 8)) --output "$DIR" "${COMMON[@]}" --quiet
    MD_TRAJ+=("$DIR/310K/trajectory.dcd") MD_WEIGHTS+=(1) MD_TEMPS+=(310)
done
run md --system "$SYSTEM" --temperatures 310 --start-from hot/1000K/trajectory.dcd --start-basins --n-starts "$N_STARTS" --ns "$SEEDED_NS" \
    --report-ps 0.01 --equilibration-ps 1 --seed 3 --output seeded "${COMMON[@]}" --quiet
run train --trajectories "${MD_TRAJ[@]}" seeded/310K/trajectory.dcd --trajectory-weights "${MD_WEIGHTS[@]}" 2 \
    --topology seeded/310K/topology.pdb --output init --n-layer "$N_LAYER" --n-head "$N_HEAD" --d-model "$D_MODEL" --n-bins "$N_BINS" \
    "${SCHEDULE[@]}" --learning-rate 2e-3 --warmup-steps 100 --ema-decay 0.995 --eval-interval 100 \
    --device "$DEVICE" "${COMMON[@]}" --quiet
run self-train --model init/model.safetensors --system "$SYSTEM" --trajectories "${MD_TRAJ[@]}" seeded/310K/trajectory.dcd \
    --trajectory-temperatures "${MD_TEMPS[@]}" 310 --state "phiL=$LEFT" --stratify --n-rounds "$ROUNDS" --n-proposals "$PROPOSALS" \
    --n-steps 100 --learning-rate 3e-4 --ema-decay 0.995 --output self_trained --device "$DEVICE" "${COMMON[@]}" --quiet

# evaluation: the self-trained model against an independent MD run (another seed)
run free-energy --model self_trained/model.safetensors --system "$SYSTEM" --n "$N_EVAL" --seed 4 "${STATES[@]}" \
    --device "$DEVICE" "${COMMON[@]}" | tee free_energy_model.txt
run mcmc --model self_trained/model.safetensors --system "$SYSTEM" --iterations 200 --attempts 10 --langevin-steps 50 \
    --seed 5 --output chain.dcd --device "$DEVICE" "${COMMON[@]}" --quiet | tee mcmc.txt
if [ "$REF_NS" != "0" ]; then
    run md --system "$SYSTEM" --temperatures 310 --ns "$REF_NS" --report-ps 1 --seed 6 --output reference "${COMMON[@]}" --quiet
    run evaluate --model self_trained/model.safetensors --system "$SYSTEM" --reference reference/310K/trajectory.dcd \
        --topology reference/310K/topology.pdb --n "$N_EVAL" --seed 7 --lag "$TICA_LAG" --output evaluation --device "$DEVICE" "${COMMON[@]}" --quiet
    run free-energy --trajectory reference/310K/trajectory.dcd --topology reference/310K/topology.pdb "${STATES[@]}" \
        | tee free_energy_reference.txt
    if [ "$UMBRELLA" = "1" ]; then
        MID=$(( (N + 3) / 2 ))  # the middle residue (Ace is residue 1)
        # stiff, dense windows: phi rises about 12 kT between -50 and 0 degrees, and soft windows (k = 60, 18 of
        # them) slide off that flank and leave the phi > 0 windows joined by too few frames (docs/benchmarks.md
        # section 21: 0.58 % for AAA's alpha_L3 at k = 60, 2.1 % at k = 300 with 36 windows, for the same MD time)
        run umbrella --system "$SYSTEM" --dihedrals "phi$MID" --windows 36 --k 300 --ps 100 --report-ps 0.25 --equilibration-ps 10 \
            --start-from reference/310K/trajectory.dcd --save-positions --state "alphaL$MID=phi$MID > 0" --workers 1 --seed 8 \
            --output "umbrella_phi${MID}_k300" "${COMMON[@]}" --quiet | tee umbrella.txt
        case ${SEQ:MID-2:1} in
            G | A) ;;
            *)  # the middle residue's side-chain rotamers and its backbone together, which the reference MD may
                # never cross: metadynamics on (psi, chi1), then 4 ns under the frozen bias, reweighted (umbrella
                # windows on chi1 alone leave the backbone where the MD frames had it; docs/benchmarks.md
                # sections 21 and 22). 1 fs steps, the System's masses: 2 fs with 3 Da hydrogens is twice as fast and
                # matched the 1 fs reference on alanine dipeptide, but is open on a peptide backbone (section 22).
                run metadynamics --system "$SYSTEM" --dihedrals "psi$MID" "chi1_$MID" --build-ps 1000 --ps 4000 \
                    --start-from reference/310K/trajectory.dcd \
                    --state "chi1t$MID=abs(chi1_$MID) > 120" --state "chi1p$MID=0 < chi1_$MID < 120" \
                    --state "alpha$MID=phi$MID < 0 and -120 <= psi$MID <= 50" --seed 9 \
                    --output "metadynamics_psi${MID}_chi1_${MID}" "${COMMON[@]}" --quiet | tee metadynamics_chi1.txt ;;
        esac
    fi
fi
echo "done: $OUT/evaluation/evaluation.md, $OUT/free_energy_model.txt against $OUT/free_energy_reference.txt (and umbrella*.txt, metadynamics*.txt with UMBRELLA=1), $OUT/mcmc.txt"

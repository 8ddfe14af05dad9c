#!/usr/bin/env bash
# A venv of its own for the peer fast loaders that benchmarks/peer_loaders.py times, so that their
# dependencies never touch the project's environment:
#
#     bash benchmarks/peers_venv.sh [VENV]        # default /tmp/peers-venv
#     python benchmarks/peer_loaders.py MODEL.safetensors --python VENV/bin/python
#
# torch comes first, pinned to the project's CPU build (with PyPI's default index a plain
# `pip install torch` pulls a CUDA build and its nvidia-* wheels; set TORCH_INDEX to pick another
# index, e.g. https://download.pytorch.org/whl/cpu). Then each peer is installed on its own, so one
# that fails does not stop the others; the summary says which installed and which can be imported.
set -uo pipefail

VENV=${1:-/tmp/peers-venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
PEERS=(safetensors fastsafetensors tensorizer serverless-llm-store)
declare -A MODULE=([safetensors]=safetensors [fastsafetensors]=fastsafetensors [tensorizer]=tensorizer
  [serverless-llm-store]=sllm_store)

if [[ ! -x $VENV/bin/python ]]; then
  "$PYTHON" -m venv "$VENV" || { echo "cannot create a venv at $VENV" >&2; exit 1; }
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)
log=$VENV/install-logs
mkdir -p "$log"

torch_args=("$TORCH_SPEC")
[[ -n ${TORCH_INDEX:-} ]] && torch_args+=(--index-url "$TORCH_INDEX")
if ! "${PIP[@]}" "${torch_args[@]}" >"$log/torch.log" 2>&1; then
  echo "torch failed to install (see $log/torch.log):" >&2
  tail -n 5 "$log/torch.log" >&2
  exit 1
fi
if "$VENV/bin/python" -W ignore -c 'import sys, torch; sys.exit(torch.version.cuda is not None)'; then
  echo "torch: $("$VENV/bin/python" -W ignore -c 'import torch; print(torch.__version__)') (CPU build)"
else
  echo "torch: $("$VENV/bin/python" -W ignore -c 'import torch; print(torch.__version__)') (a CUDA build: set TORCH_INDEX)"
fi

# The line of a failed pip log that says why: a pin that conflicts, else the last error raised.
why() {
  grep -m1 -E ' depends on ' "$1" | grep -v requested ||
    grep -E '^ *[A-Za-z]+Error: |^ERROR: ' "$1" | grep -v 'subprocess-exited-with-error' | tail -n 1
}

declare -A STATUS
for peer in "${PEERS[@]}"; do
  # The newest release, with the torch pin kept: a peer that wants another torch fails here with the
  # conflict instead of replacing torch, or of pip backtracking through older releases (sdists that
  # each build their metadata against their own torch).
  latest=$("$VENV/bin/python" -m pip index versions "$peer" 2>/dev/null | sed -n "1s/^$peer (\(.*\))$/\1/p")
  spec=$peer${latest:+==$latest}
  if "${PIP[@]}" "$spec" "$TORCH_SPEC" >"$log/$peer.log" 2>&1; then
    version=$("$VENV/bin/python" -m pip show "$peer" 2>/dev/null | sed -n 's/^Version: //p')
    if err=$("$VENV/bin/python" -c "import ${MODULE[$peer]}" 2>&1); then
      STATUS[$peer]="installed $version, imports"
    else
      STATUS[$peer]="installed $version, import fails: $(tail -n 1 <<<"$err")"
    fi
  else
    STATUS[$peer]="not installed ($spec): $(why "$log/$peer.log" | sed 's/^ *//') (log: $log/$peer.log)"
  fi
done

echo "venv: $VENV"
for peer in "${PEERS[@]}"; do
  echo "  $peer: ${STATUS[$peer]}"
done

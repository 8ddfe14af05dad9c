#!/usr/bin/env bash
# swiftserve vs llama.cpp's OpenAI server on the same GGUF, same load, one server at a time
# (so they never share the CPU), then a ratio table.
#
#   bash benchmarks/serve_compare.sh                      # defaults below
#   CONCURRENCY=1,4,16 REQUESTS=32 bash benchmarks/serve_compare.sh
#
# Needs: pip install 'llama-cpp-python[server]' (builds llama.cpp from source; slow on 2 cores).
# GGUF: $GGUF, else the SmolLM2-135M-Instruct GGUF the loader caches (Q4_1). llama.cpp runs it
# as is (quantized, THREADS threads, one request at a time: a new request must not interrupt the
# running one); swiftserve converts it once to its own weights (dtype auto).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
CONCURRENCY=${CONCURRENCY:-1,4,16,64}
REQUESTS=${REQUESTS:-64}
DURATION=${DURATION:-120}
MAX_TOKENS=${MAX_TOKENS:-64}
THREADS=${THREADS:-2}
PORT_SWIFT=${PORT_SWIFT:-8101}
PORT_LLAMA=${PORT_LLAMA:-8102}
OUT=${OUT:-benchmarks/results}
GGUF=${GGUF:-$($PYTHON -c "from swiftserve.loader import source_gguf; print(source_gguf('smollm2-135m-instruct'))")}
mkdir -p "$OUT"

server_pid=""
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"
        for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$server_pid" 2>/dev/null && kill -KILL "$server_pid"
    fi
    server_pid=""
}
trap stop_server EXIT

wait_ready() {  # url, log
    for _ in $(seq 1 600); do
        if curl -sf "$1" >/dev/null 2>&1; then return 0; fi
        if ! kill -0 "$server_pid" 2>/dev/null; then echo "server died; log:"; cat "$2"; exit 1; fi
        sleep 0.5
    done
    echo "server not ready after 300 s; log:"; cat "$2"; exit 1
}

bench() {  # label, port
    $PYTHON benchmarks/serve.py --base-url "http://127.0.0.1:$2/v1" --model smollm2 --label "$1" \
        --concurrency "$CONCURRENCY" --requests "$REQUESTS" --duration "$DURATION" \
        --max-tokens "$MAX_TOKENS" --out "$OUT/serve_$1.json"
}

echo "== swiftserve on $GGUF"
swiftserve launch --models "smollm2=$GGUF" --port "$PORT_SWIFT" > "$OUT/serve_swiftserve.log" 2>&1 &
server_pid=$!
wait_ready "http://127.0.0.1:$PORT_SWIFT/health" "$OUT/serve_swiftserve.log"
bench swiftserve "$PORT_SWIFT"
stop_server

echo "== llama.cpp server on $GGUF ($THREADS threads)"
$PYTHON -m llama_cpp.server --model "$GGUF" --model_alias smollm2 --n_threads "$THREADS" \
    --n_threads_batch "$THREADS" --n_ctx 2048 --interrupt_requests False --host 127.0.0.1 --port "$PORT_LLAMA" \
    > "$OUT/serve_llamacpp.log" 2>&1 &
server_pid=$!
wait_ready "http://127.0.0.1:$PORT_LLAMA/v1/models" "$OUT/serve_llamacpp.log"
bench llamacpp "$PORT_LLAMA"
stop_server

$PYTHON - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
ours = {r["concurrency"]: r for r in json.loads((out / "serve_swiftserve.json").read_text())["levels"]}
base = {r["concurrency"]: r for r in json.loads((out / "serve_llamacpp.json").read_text())["levels"]}
rows = []
print(f"\n{'conc':>5} {'swift tok/s':>12} {'llama tok/s':>12} {'ratio':>7} {'swift e2e p95':>14} {'llama e2e p95':>14}")
for c in sorted(set(ours) & set(base)):
    a, b = ours[c], base[c]
    ratio = a["output_tok_per_s"] / b["output_tok_per_s"] if b["output_tok_per_s"] else float("nan")
    rows.append({"concurrency": c, "swiftserve_tok_s": a["output_tok_per_s"], "llamacpp_tok_s": b["output_tok_per_s"],
                 "ratio": round(ratio, 3), "swiftserve_e2e_p95_ms": a["e2e_p95_ms"], "llamacpp_e2e_p95_ms": b["e2e_p95_ms"]})
    print(f"{c:>5} {a['output_tok_per_s']:>12.1f} {b['output_tok_per_s']:>12.1f} {ratio:>6.2f}x "
          f"{a['e2e_p95_ms']:>12.0f}ms {b['e2e_p95_ms']:>12.0f}ms")
(out / "serve_compare.json").write_text(json.dumps(rows, indent=2))
print(f"wrote {out / 'serve_compare.json'}")
EOF

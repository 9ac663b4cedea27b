#!/usr/bin/env bash
# One call for the first GPU lent to us (issue 22, item 4): runs in under 8 minutes and writes
# one report, gpu_check_report.md (or $REPORT), with
#   1. the Triton tests without the interpreter (tests/mtlib/maxpool/test_maxpool_triton.py),
#   2. bit-for-bit determinism of the Triton backward (two runs, same bits) on every pool,
#   3. parity of the Triton path with the CPU path (values, indices, gradients, every rule),
#   4. the benchmark (forward + backward against PyTorch's CUDA kernels) with GB/s against the
#      device's theoretical bandwidth.
# Usage: benchmarks/gpu_check.sh [python]   (default: .venv/bin/python, else python3)
# With TRITON_INTERPRET=1 on a CPU it runs the same steps on the interpreter, small, to prove the
# script (the benchmark step then times the CPU path).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${1:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
REPORT="${REPORT:-gpu_check_report.md}"
START=$(date +%s)
status=0
{
  echo "# mtlib GPU check ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  "$PY" - <<'PYEOF'
import os, torch
dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"- torch {torch.__version__}, device: {dev}, TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')}")
PYEOF
} > "$REPORT"

section() { echo -e "\n## $1\n" >> "$REPORT"; }
# time limits per step (s): 150 + 90 + 200 on a GPU, under 8 minutes with the start-up; the
# interpreter on a CPU is some 20x slower, so there they are tripled
SCALE=$([ "${TRITON_INTERPRET:-0}" = 1 ] && echo 3 || echo 1)
run() {  # run a step with a time limit, keep its tail in the report, remember a failure
  local limit=$(( $1 * SCALE )); shift
  local t0=$(date +%s)
  timeout "$limit" "$@" > /tmp/gpu_check_step.log 2>&1
  local rc=$?
  [ $rc -ne 0 ] && status=1
  { echo '```'; tail -n 40 /tmp/gpu_check_step.log; echo '```';
    echo "exit status $rc, $(( $(date +%s) - t0 )) s"; } >> "$REPORT"
}

section "1. Triton tests (no interpreter on CUDA)"
run 150 "$PY" -m pytest -q -p no:cacheprovider -x tests/mtlib/maxpool/test_maxpool_triton.py

section "2-3. Determinism (bit for bit) and parity with the CPU path"
run 90 "$PY" - <<'PYEOF'
import os, torch
import mtlib.maxpool as mp
cuda = torch.cuda.is_available()
dev = "cuda" if cuda else "cpu"
small = not cuda
gen = torch.Generator().manual_seed(0)
cases = [("max_pool1d", (4, 8, 64 if small else 4096), (3, 2, 1)),
         ("max_pool2d", (2, 4, 16, 16) if small else (32, 64, 56, 56), (3, 2, 1)),
         ("max_pool3d", (1, 2, 6, 8, 8) if small else (4, 32, 16, 56, 56), (3, 2, 1)),
         ("adaptive_max_pool2d", (2, 4, 13, 13) if small else (32, 128, 13, 13), ((5, 5),)),
         ("adaptive_max_pool3d", (1, 2, 6, 7, 7) if small else (8, 32, 16, 28, 28), ((4, 5, 3),))]
bad = 0
for name, shape, args in cases:
    x = torch.randint(-1, 2, shape, generator=gen).float()       # ties in most windows
    fn = getattr(mp, name)
    for ties in ("first", "last", "uniform"):
        ref_x = x.clone().requires_grad_()
        ref = fn(ref_x, *args, ties=ties, backend="torch")
        g = torch.randn(ref.shape, generator=gen)
        ref.backward(g)
        grads = []
        for _ in range(2):
            xd = x.detach().clone().to(dev).requires_grad_()
            y = fn(xd, *args, ties=ties, backend="triton")
            y.backward(g.to(dev))
            grads.append(xd.grad.cpu())
        same_bits = torch.equal(grads[0].view(torch.int32), grads[1].view(torch.int32))
        parity = torch.equal(y.detach().cpu(), ref.detach()) and torch.allclose(grads[0], ref_x.grad, rtol=1e-6, atol=1e-6)
        bad += not (same_bits and parity)
        print(f"{name:22s} {ties:8s} deterministic={same_bits} parity_with_cpu={parity}")
print("FAILED" if bad else "all deterministic and equal to the CPU path")
raise SystemExit(1 if bad else 0)
PYEOF

section "4. Benchmark (forward + backward / PyTorch native; GB/s vs peak)"
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  run 200 "$PY" benchmarks/maxpool.py --device cuda --dtypes float32 --reps 11 --out benchmarks/results
else  # interpreter proof on a CPU: two small cases, the CPU path
  run 40 "$PY" benchmarks/maxpool.py --device cpu --quick --dtypes float32 --reps 2 \
      --cases "k2s2 small map,adaptive 2d ->(5,5)" --out /tmp/gpu_check_bench
fi

echo -e "\n---\nTotal: $(( $(date +%s) - START )) s; overall status: $([ $status -eq 0 ] && echo PASS || echo FAIL)" >> "$REPORT"
cat "$REPORT"
exit $status

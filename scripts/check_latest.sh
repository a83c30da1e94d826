#!/usr/bin/env bash
# Check the newest versions pyproject.toml allows, without the lock (constraints/reference.txt):
#   scripts/check_latest.sh [--quick] [--keep]
# Installs the project with every extra into a new temporary venv as pip resolves it today (no -c), prints each
# package whose version differs from the lock, then runs the test suite there (--quick: the harness, report,
# verify and search tests only, a minute or two). The exit status is the tests'. --keep keeps the venv and prints
# its path. torch stays at $W2S_TORCH (default torch==2.13.0, the CPU wheel used here); set W2S_TORCH=torch for
# the newest. A pass means the newest releases still work; the committed figures are reproduced exactly only
# with the lock (see docs/reproducibility.md).
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
KEEP=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    --keep) KEEP=1 ;;
    *) echo "usage: scripts/check_latest.sh [--quick] [--keep]" >&2; exit 2 ;;
  esac
done
TMP="$(mktemp -d "${TMPDIR:-/tmp}/w2s-latest.XXXXXX")"
if [ "$KEEP" = 0 ]; then trap 'rm -rf "$TMP"' EXIT; fi
VENV="$TMP/venv"
EXTRAS="$(python3 -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb"));
print(",".join(sorted(d["project"].get("optional-dependencies", {}))))' 2>/dev/null || echo test)"
echo "check_latest: installing ${W2S_TORCH:-torch==2.13.0} -e .[${EXTRAS}] without the lock into $VENV" >&2
python3 -m venv "$VENV"
if ! "$VENV/bin/pip" install -q "${W2S_TORCH:-torch==2.13.0}" -e ".[${EXTRAS}]" >"$TMP/pip.log" 2>&1; then
  grep -v "^WARNING: Location" "$TMP/pip.log" | tail -20 >&2
  echo "check_latest: the install without the lock failed (log above)" >&2
  exit 1
fi
"$VENV/bin/pip" freeze --all --exclude-editable 2>/dev/null >"$TMP/freeze.txt"
"$VENV/bin/python" - "$TMP/freeze.txt" constraints/reference.txt <<'EOF'
import re
import sys

def pins(path):
    out = {}
    for line in open(path, encoding="utf-8"):
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)", line)
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out

newest, lock = pins(sys.argv[1]), pins(sys.argv[2])
moved = [(n, lock[n], v) for n, v in sorted(newest.items()) if n in lock and v.split("+")[0] != lock[n].split("+")[0]]
new = [(n, v) for n, v in sorted(newest.items()) if n not in lock and n not in ("pip", "w2s-eval")]
print(f"versions that differ from the lock ({len(moved)} of {len(newest)} installed):")
for n, old, v in moved:
    print(f"  {n}: lock {old} -> newest {v}")
for n, v in new:
    print(f"  {n}: not in the lock -> {v}")
EOF
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
if [ "$QUICK" = 1 ]; then
  TESTS=(tests/test_harness_verify.py tests/test_harness_report.py tests/test_harness_records.py tests/test_search.py
         tests/test_harness_cli.py)
else
  TESTS=()
fi
status=0
"$VENV/bin/python" -m pytest -q -x "${TESTS[@]}" || status=$?
[ "$KEEP" = 1 ] && echo "check_latest: the venv is kept: $VENV" >&2
exit "$status"

#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need (Python packages in a
# private venv, Debian's Dovecot and PostgreSQL for the real servers), then lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

# Real servers for the tests (the fixtures start private instances of each): Debian's Dovecot
# for POP3 and IMAP (its oauth2 passdb included) and PostgreSQL.
missing=()
for pkg in dovecot-pop3d dovecot-imapd postgresql; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "== installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" >/dev/null || true   # the service start is refused in containers
    else
        echo "!! ${missing[*]} not installed and this is not root: server tests will skip (fail under CI=true)"
    fi
fi
command -v openssl >/dev/null 2>&1 || { [ "$(id -u)" = 0 ] && apt-get install -y -qq openssl >/dev/null; } || true

VENV=${COMMIT_EMAIL_VENV:-$ROOT/.venv}
if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip >/dev/null
echo "== installing commit-email[test]"
"$PY" -m pip install -q -e ".[test]"

# The shared third-party corpus, when it lies beside the checkout.
if [ -z "${COMMIT_EMAIL_CORPUS:-}" ] && [ -d "$ROOT/../shared/corpus" ]; then
    export COMMIT_EMAIL_CORPUS="$ROOT/../shared/corpus"
fi

echo "== ruff"
"$VENV/bin/ruff" check commit_email tests tools benchmarks
echo "== mypy (strict)"
"$VENV/bin/mypy"
echo "== docs (generated reference current, mkdocs --strict: warnings are errors)"
"$PY" tools/gen_reference.py --check
"$PY" -m mkdocs build --strict --quiet --site-dir "$(mktemp -d)"

echo "== benchmarks, smoke size (the scripts work and check their results; no timing judged)"
# smtp_bench needs no guard: without root or Dovecot it skips (CI=true: fails) its run --once part itself.
for bench in common process_bench matching_bench memory_bench rules_bench hostile_bench pop3_bench imap_bench smtp_bench postgres_bench; do
    [ -f "benchmarks/$bench.py" ] || continue
    if { [ "$bench" = pop3_bench ] || [ "$bench" = imap_bench ]; } \
            && { [ "$(id -u)" != 0 ] || ! command -v dovecot >/dev/null; } \
            && [ "${CI:-}" != true ]; then
        echo "!! skipping $bench: it needs root and dovecot (it fails instead under CI=true)"
        continue
    fi
    # Debian keeps pg_ctl out of PATH, in /usr/lib/postgresql/VERSION/bin.
    if [ "$bench" = postgres_bench ] \
            && { [ "$(id -u)" != 0 ] || ! command -v dovecot >/dev/null \
                 || ! { command -v pg_ctl >/dev/null \
                        || compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null; }; } \
            && [ "${CI:-}" != true ]; then
        echo "!! skipping $bench: it needs root, pg_ctl and dovecot (it fails instead under CI=true)"
        continue
    fi
    echo "-- benchmarks/$bench.py --smoke"
    "$PY" "benchmarks/$bench.py" --smoke | tail -n 1
done

echo "== pytest"
set +e
"$PY" -m pytest -q -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit "$status"

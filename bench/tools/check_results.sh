#!/usr/bin/env bash
# Checks that bench/results/ holds exactly what the benchmark's pages cite: every file git keeps there is cited in
# bench/RESULTS.md, and every `bench/results/<file>` that RESULTS.md or bench/README.md names is kept by git
# (results/ is ignored, so a new run's files stay out until `git add -f`).
#
#   bash bench/tools/check_results.sh        exit 0 if both hold; else lists what does not and exits 1
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$BENCH_DIR"

# bench/results/<name> as the pages write it; a placeholder such as bench/results/<name>.json yields nothing.
cited_in() { grep -o 'bench/results/[A-Za-z0-9._+-]\+' "$@" | sed 's#^.*bench/results/##' | sort -u; }
kept="$(git ls-files results | sed 's#^results/##' | sort -u)"
cited="$(cited_in RESULTS.md)"
named="$(cited_in RESULTS.md README.md)"

uncited="$(comm -23 <(echo "$kept") <(echo "$cited") | sed '/^$/d')"
missing="$(comm -13 <(echo "$kept") <(echo "$named") | sed '/^$/d')"
[ -z "$uncited" ] || { echo "kept in bench/results/ but not cited in bench/RESULTS.md:"; echo "$uncited" | sed 's/^/  /'; }
[ -z "$missing" ] || { echo "cited but not kept in bench/results/ (git add -f, or drop the citation):"; echo "$missing" | sed 's/^/  /'; }
[ -z "$uncited$missing" ] || exit 1
echo "bench/results/: $(echo "$kept" | sed '/^$/d' | wc -l) files kept, each cited in bench/RESULTS.md; every file cited is kept"

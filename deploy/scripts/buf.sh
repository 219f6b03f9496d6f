#!/usr/bin/env bash
# buf lint | buf breaking: the contracts under proto/ stay lint-clean and never break a consumer.
#
# `breaking`:
#   - off main (a feature branch): the working tree against main;
#   - on main (CI runs on a fresh clone of the submitted main, whose recent commits ARE the change):
#     uncommitted contract changes against HEAD, then every commit that changed proto/ or buf.yaml
#     against its parent (the last $BUF_BREAKING_DEPTH of them), so no step in the history broke
#     what the step before had published, whichever session landed it;
#   - a reference without buf.yaml and proto/ (before the contracts existed) is skipped, and said so.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUF="${BUF:-.tools/bin/buf}"
DEPTH="${BUF_BREAKING_DEPTH:-50}"

has_contracts() {
  git cat-file -e "$1:buf.yaml" 2>/dev/null && git cat-file -e "$1:proto" 2>/dev/null
}

check() {  # check INPUT AGAINST_REF LABEL
  if ! has_contracts "$2"; then
    echo "buf breaking: $3 skipped ($2 predates the contracts)"
    return 0
  fi
  "$BUF" breaking "$1" --against ".git#ref=$(git rev-parse "$2")"
  echo "buf breaking: $3 breaks nothing"
}

breaking() {
  if ! git rev-parse --verify -q HEAD >/dev/null; then
    echo "buf breaking: skipped (no commits yet)"
    return 0
  fi
  if [ "$(git rev-parse --abbrev-ref HEAD)" != "main" ] && git rev-parse --verify -q main >/dev/null; then
    check . main "the working tree against main"
    return 0
  fi
  if ! git diff --quiet HEAD -- proto buf.yaml || [ -n "$(git ls-files --others --exclude-standard proto)" ]; then
    check . HEAD "the uncommitted change against HEAD"
  fi
  local commit
  for commit in $(git rev-list --max-count="$DEPTH" HEAD -- proto buf.yaml); do
    if git rev-parse --verify -q "$commit^" >/dev/null && has_contracts "$commit"; then
      check ".git#ref=$commit" "$commit^" "commit $(git rev-parse --short "$commit")"
    fi
  done
}

case "${1:-}" in
  lint)
    "$BUF" lint
    echo "buf lint: clean"
    ;;
  breaking)
    breaking
    ;;
  *)
    echo "usage: $0 lint|breaking" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# `make proto-breaking`: fail when protos/ (as in the working tree) breaks the contract of an earlier
# commit, by buf's FILE rules (protos/buf.yaml: field numbers, names, types, packages and the language
# options such as go_package and java_package all count). docs/protocol.md, "Changing the contract".
#
# The commit compared against:
#   PROTO_AGAINST=<git ref>   when set (e.g. `make proto-breaking PROTO_AGAINST=HEAD` for uncommitted edits,
#                             or PROTO_AGAINST=origin/main);
#   else the merge-base with the current branch's upstream, when HEAD has commits the upstream lacks;
#   else HEAD~1, the previous commit (what CI compares: each commit against its parent).
# No such commit (the first commit, a `--depth 1` shallow clone): it says so and passes.
#
# An intentional break passes when INFERD_PROTO_BREAKING_OK=1 is set, or when a commit message between
# the compared commit and HEAD contains the marker [proto-breaking] (how CI is told). The breaks are
# printed either way.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUF=${BUF:-.cache/buf/node_modules/.bin/buf}
MARKER='[proto-breaking]'

if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "proto-breaking: skipped: not a git checkout, no earlier commit to compare against"
  exit 0
fi

against=${PROTO_AGAINST:-}
how="PROTO_AGAINST"
if [ -z "$against" ]; then
  against=HEAD~1
  how="the previous commit"
  if upstream=$(git rev-parse --verify -q '@{upstream}' 2>/dev/null) \
    && base=$(git merge-base HEAD "$upstream" 2>/dev/null) \
    && [ "$base" != "$(git rev-parse HEAD)" ]; then
    against=$base
    how="the merge-base with $(git rev-parse --abbrev-ref '@{upstream}')"
  fi
fi

if ! commit=$(git rev-parse --verify -q "${against}^{commit}"); then
  echo "proto-breaking: skipped: no commit '${against}' to compare against (first commit, or a shallow clone:"
  echo "  fetch at least one more commit, e.g. git fetch --deepen=1)"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! git archive "$commit" protos 2>/dev/null | tar -x -C "$work" 2>/dev/null || [ ! -d "$work/protos" ]; then
  echo "proto-breaking: skipped: commit ${commit:0:12} has no protos/ to compare against"
  exit 0
fi

echo "proto-breaking: protos/ against ${how} (${against} = ${commit:0:12}), buf FILE rules"
status=0
"$BUF" breaking protos --against "$work/protos" || status=$?
if [ "$status" -eq 0 ]; then
  echo "proto-breaking: no breaking change"
  exit 0
fi
if [ "$status" -ne 100 ]; then
  echo "proto-breaking: buf failed (exit $status)"
  exit "$status"
fi
if [ "${INFERD_PROTO_BREAKING_OK:-}" = 1 ]; then
  echo "proto-breaking: the breaking changes above are accepted (INFERD_PROTO_BREAKING_OK=1)"
  exit 0
fi
if git log --format=%B "${commit}..HEAD" | grep -qF -- "$MARKER"; then
  echo "proto-breaking: the breaking changes above are accepted (a commit message since ${commit:0:12} says ${MARKER})"
  exit 0
fi
echo "proto-breaking: FAILED: the changes above break the inferd contract for existing clients."
echo "  Prefer an additive change (new field numbers, new messages, reserved for removed ones). If the break"
echo "  is intended, say ${MARKER} in the commit message (or set INFERD_PROTO_BREAKING_OK=1 locally);"
echo "  see docs/protocol.md, \"Changing the contract\"."
exit 1

#!/usr/bin/env bash
# The schema's breaking-change check (buf.yaml `breaking`), run by `make lint`:
# - the working tree against HEAD (a change not committed yet);
# - each of the last commits that changed protos/ against the commit before it, so that a landing
#   of several commits is checked at every step, not only across its last one.
# Usage: scripts/buf_breaking.sh path/to/buf [how many proto-changing commits, default 20]
set -euo pipefail
buf=$1
depth=${2:-20}
git rev-parse -q --verify HEAD >/dev/null || exit 0
if [ -n "$(git ls-tree HEAD protos)" ]; then
    "$buf" breaking --against '.git#ref=HEAD'
fi
for commit in $(git log --format=%H -n "$depth" HEAD -- protos); do
    parent=$(git rev-parse -q --verify "$commit^") || continue
    [ -n "$(git ls-tree "$parent" protos)" ] || continue  # the schema began here
    if ! "$buf" breaking ".git#ref=$commit" --against ".git#ref=$parent"; then
        echo "buf breaking: $(git log -1 --format='%h %s' "$commit") breaks the schema of the commit before it" >&2
        exit 1
    fi
done

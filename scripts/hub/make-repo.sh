#!/usr/bin/env bash
# Turns a directory laid out like a Hub kernel repo (README.md, build/<variant>/...)
# into a bare git repository that the loopback Hub serves as kernel repo <org>/<name>:
# $KERNELS_HUB_DIR/mirrors/kernels/<org>/<name>.
#
# Usage: scripts/hub/make-repo.sh <org>/<name> <src-dir> [ref...]
#
# The whole content of <src-dir> becomes one parentless commit with a fixed author,
# committer, date and message, so the same files always give the same commit sha.
# Each ref is set to that commit: a bare name is a branch (refs/heads/<ref>), a name
# starting with refs/ is used as is (e.g. refs/tags/v1.0.0). Without refs: main and
# v1. A new repository always gets main as well. Running it again with other
# content moves only the refs named, so branches can differ, e.g.:
#
#   make-repo.sh acme/relu ./relu-v1             # main, v1 -> commit A
#   make-repo.sh acme/relu ./relu-v2 main v2     # main, v2 -> commit B; v1 stays A
#
# Prints the commit sha on stdout. The server needs no restart to see changes.
set -euo pipefail

# shellcheck source=scripts/hub/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ $# -ge 2 ] || hub_die "usage: $0 <org>/<name> <src-dir> [ref...]"
repo_id="$1"
src="$2"
shift 2
case "$repo_id" in
    */*/*|/*|*/|*' '*) hub_die "repo id must be <org>/<name>, got '$repo_id'" ;;
    */*) ;;
    *) hub_die "repo id must be <org>/<name>, got '$repo_id'" ;;
esac
[ -d "$src" ] || hub_die "source directory '$src' does not exist"
src="$(cd "$src" && pwd)"
refs=("$@")
[ ${#refs[@]} -gt 0 ] || refs=(main v1)

bare="$hub_mirrors/kernels/$repo_id"

# Only this script's settings count: no user/system git config (excludes files,
# hooks, autocrlf, signing), fixed identity and dates.
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME="kernels-rs test hub" GIT_AUTHOR_EMAIL="hub@kernels-rs.invalid"
export GIT_COMMITTER_NAME="kernels-rs test hub" GIT_COMMITTER_EMAIL="hub@kernels-rs.invalid"
export GIT_AUTHOR_DATE="2025-01-01T00:00:00+0000" GIT_COMMITTER_DATE="2025-01-01T00:00:00+0000"

new_repo=0
if [ ! -d "$bare" ]; then
    mkdir -p "$(dirname "$bare")"
    git init --quiet --bare --initial-branch=main "$bare"
    new_repo=1
fi
git_bare() { git --git-dir="$bare" "$@"; }

index="$(mktemp)"
trap 'rm -f "$index"' EXIT
rm -f "$index"
# --force: a .gitignore inside the source must not drop files the Hub would serve.
GIT_INDEX_FILE="$index" git_bare --work-tree="$src" add --all --force .
tree="$(GIT_INDEX_FILE="$index" git_bare write-tree)"
[ "$tree" != "4b825dc642cb6eb9a060e54bf8d69288fbee4904" ] || hub_die "'$src' has no files"
commit="$(echo "Upload $repo_id" | git_bare commit-tree "$tree")"

[ "$new_repo" = 1 ] && git_bare update-ref refs/heads/main "$commit"
for ref in "${refs[@]}"; do
    case "$ref" in
        refs/*) full="$ref" ;;
        *) full="refs/heads/$ref" ;;
    esac
    git_bare check-ref-format "$full" || hub_die "'$ref' is not a valid git ref name"
    git_bare update-ref "$full" "$commit"
done
git_bare symbolic-ref HEAD refs/heads/main

echo "$repo_id: ${refs[*]} -> $commit ($bare)" >&2
echo "$commit"

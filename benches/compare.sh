#!/usr/bin/env bash
# End-to-end comparison of cairn with restic, rustic and borg (whichever are installed) on
# the shared corpora, in one run on one machine. Each tool runs with its default compression
# and encryption. For every tool and step it prints wall time, CPU time (user+sys), peak RSS
# and the bytes the step added to the repository.
#
# Usage: benches/compare.sh CORPUS WORK [TOOLS] [STEPS]
#   CORPUS  holds kernel/<release>/ (../shared/bench/make-kernel-series.sh CORPUS/kernel)
#           and pg/night-<n>.sql    (../shared/bench/make-pgdumps.sh CORPUS/pg 1000000 5)
#   WORK    scratch folder for repositories and restores (emptied first)
#   TOOLS   comma-separated, default cairn,restic,rustic,borg (missing ones are skipped)
#   STEPS   comma-separated, default a,b,c,d,restore,check,check-data,forget-prune:
#             a  initial backup of the first kernel release
#             b  the same backup again, nothing changed
#             c  backups of the second and third releases on top
#             d  the pg_dump nights, each piped through standard input
#             restore  full restore of the first release (runs after check-data and before
#                      forget-prune, which leaves borg, pruning without grouping, without it)
#             check       structure check of the repository as the steps before left it
#             check-data  check that reads and verifies all data (also prints MB/s of
#                         repository verified)
#             forget-prune  forget --keep-last 1 and prune, on what the steps before left
#                         (restic and rustic group by host and paths, so each kernel release
#                         keeps its snapshot; borg prunes archives without grouping, then
#                         compacts)
# S3=DIR puts the cairn and restic repositories in the bucket of the S3 store whose settings
# DIR/env holds (../shared/bench/garage-cluster.sh start DIR; rustic and borg are skipped, and
# bytes added are not measured there).
# COLD=0 keeps the page cache between steps (default: drop it before every step, as after a
# night of other work; needs root). Either way, dirty pages are written back (sync) first.
# Peers: ../shared/bench/install-peers.sh. cairn: built with `cargo build --release`.
set -euo pipefail
corpus=$(realpath "$1"); work=$(realpath -m "$2")
tools=${3:-cairn,restic,rustic,borg}; steps=${4:-a,b,c,d,restore,check,check-data,forget-prune}
here=$(cd "$(dirname "$0")/.." && pwd)
cairn_bin=${CAIRN_BIN:-$here/target/release/cairn}
mapfile -t releases < <(ls -d "$corpus"/kernel/*/ | sort -V)
mapfile -t nights < <(ls "$corpus"/pg/night-*.sql | sort -V)
export RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench RUSTIC_PASSWORD=bench CAIRN_PASSWORD=bench
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
rm -rf "$work"; mkdir -p "$work"
cairn_repo=$work/cairn-repo restic_repo=$work/restic-repo
if [ -n "${S3:-}" ]; then
  # shellcheck disable=SC1091
  source "$S3/env"; export AWS_ENDPOINT_URL=$S3_ENDPOINT
  stamp=$(date +%s)
  cairn_repo=s3://$S3_BUCKET/cairn-$stamp restic_repo=s3:$S3_ENDPOINT/$S3_BUCKET/restic-$stamp
fi
has() { case ",$steps," in *",$1,"*) return 0;; *) return 1;; esac; }

# run TOOL STEP CMD... : times CMD, prints one result line.
run() {
  local tool=$1 step=$2; shift 2
  local repo="$work/$tool-repo" before after
  before=$(du -sb "$repo" 2>/dev/null | cut -f1 || echo 0)
  sync  # so no step pays for writing back what the one before left dirty
  if [ "${COLD:-1}" = 1 ]; then echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; fi
  /usr/bin/time -o "$work/time" -f "%e %U %S %M" "$@" >"$work/out" 2>"$work/err" || {
    echo "$tool $step FAILED: $(tail -3 "$work/err")"; return 0; }
  after=$(du -sb "$repo" 2>/dev/null | cut -f1 || echo 0)
  read -r wall user sys rss < "$work/time"
  printf "%-7s %-12s %8.2f s %8.2f CPU-s %7d MB RSS %10s MB added\n" \
    "$tool" "$step" "$wall" "$(echo "$user + $sys" | bc)" $((rss / 1024)) \
    "$([ -n "${S3:-}" ] && echo - || printf %.1f "$(echo "($after - $before) / 1000000" | bc -l)")"
}

backup_cmd() { # TOOL PATH
  case $1 in
    cairn) echo "$cairn_bin -q -r $cairn_repo --cache-dir $work/cairn-cache backup $2";;
    restic) echo "restic -q -r $restic_repo backup $2";;
    rustic) echo "rustic -r $work/rustic-repo backup $2";;
    borg) echo "borg create $work/borg-repo::$(date +%s%N) $2";;
  esac
}
stdin_cmd() { # TOOL FILE
  case $1 in
    cairn) echo "$cairn_bin -q -r $cairn_repo --cache-dir $work/cairn-cache backup --stdin --stdin-name db.sql";;
    restic) echo "restic -q -r $restic_repo backup --stdin --stdin-filename db.sql";;
    rustic) echo "rustic -r $work/rustic-repo backup --stdin-filename db.sql -";;
    borg) echo "borg create --stdin-name db.sql $work/borg-repo::$(date +%s%N) -";;
  esac
}

for tool in ${tools//,/ }; do
  bin=$tool; [ "$tool" = cairn ] && bin=$cairn_bin
  command -v "$bin" >/dev/null || { echo "$tool: not installed, skipped"; continue; }
  if [ -n "${S3:-}" ] && [ "$tool" != cairn ] && [ "$tool" != restic ]; then
    echo "$tool: not run on S3, skipped"; continue
  fi
  case $tool in
    cairn) "$cairn_bin" -q -r "$cairn_repo" --cache-dir "$work/cairn-cache" init >/dev/null;;
    restic) restic -q -r "$restic_repo" init >/dev/null;;
    rustic) rustic -r "$work/rustic-repo" init >/dev/null 2>&1;;
    borg) borg init -e repokey "$work/borg-repo" >/dev/null;;
  esac
  if has a; then run "$tool" a.initial $(backup_cmd "$tool" "${releases[0]}"); fi
  if has b; then run "$tool" b.unchanged $(backup_cmd "$tool" "${releases[0]}"); fi
  if has c; then
    for r in "${releases[@]:1}"; do run "$tool" "c.$(basename "$r")" $(backup_cmd "$tool" "$r"); done
  fi
  if has d; then
    n=0
    for f in "${nights[@]}"; do
      n=$((n + 1)); cmd=$(stdin_cmd "$tool")
      run "$tool" "d.night-$n" bash -c "$cmd < $f"
    done
  fi
  if has check; then
    case $tool in
      cairn) run "$tool" check "$cairn_bin" -q -r "$cairn_repo" --cache-dir "$work/cairn-cache" check;;
      restic) run "$tool" check restic -q -r "$restic_repo" check;;
      rustic) run "$tool" check rustic -r "$work/rustic-repo" check;;
      borg) run "$tool" check borg check --repository-only "$work/borg-repo";;
    esac
  fi
  if has check-data; then
    case $tool in
      cairn) run "$tool" check-data "$cairn_bin" -q -r "$cairn_repo" --cache-dir "$work/cairn-cache" check --read-data;;
      restic) run "$tool" check-data restic -q -r "$restic_repo" check --read-data;;
      rustic) run "$tool" check-data rustic -r "$work/rustic-repo" check --read-data;;
      borg) run "$tool" check-data borg check --verify-data "$work/borg-repo";;
    esac
    read -r wall _ < "$work/time"
    if [ -z "${S3:-}" ]; then
      printf "%-7s %-12s %8.0f MB/s of repository verified\n" "$tool" check-data \
        "$(echo "$(du -sb "$work/$tool-repo" | cut -f1) / 1000000 / $wall" | bc -l)"
    fi
  fi
  if has restore; then
    t="$work/$tool-restore"; rm -rf "$t"; mkdir -p "$t"
    case $tool in
      cairn) snap=$("$cairn_bin" -r "$cairn_repo" --cache-dir "$work/cairn-cache" snapshots --json |
                    python3 -c "import json,sys; print([s['id'] for s in json.load(sys.stdin) if s['paths'][0].endswith('$(basename "${releases[0]}")')][0])")
             run "$tool" restore "$cairn_bin" -q -r "$cairn_repo" --cache-dir "$work/cairn-cache" restore "$snap" --target "$t";;
      restic) snap=$(restic -q -r "$restic_repo" snapshots --json --path "${releases[0]%/}" | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['id'])")
              run "$tool" restore restic -q -r "$restic_repo" restore "$snap" --target "$t";;
      rustic) run "$tool" restore rustic -r "$work/rustic-repo" restore --filter-paths "${releases[0]%/}" "latest:${releases[0]%/}" "$t";;
      borg) arch=$(borg list --short "$work/borg-repo" | head -1)
            run "$tool" restore bash -c "cd $t && borg extract $work/borg-repo::$arch";;
    esac
  fi
  if has forget-prune; then
    case $tool in
      cairn) run "$tool" forget-prune "$cairn_bin" -q -r "$cairn_repo" --cache-dir "$work/cairn-cache" forget --keep-last 1 --prune;;
      restic) run "$tool" forget-prune restic -q -r "$restic_repo" forget --keep-last 1 --prune;;
      rustic) run "$tool" forget-prune rustic -r "$work/rustic-repo" forget --keep-last 1 --prune;;
      borg) run "$tool" forget-prune bash -c "borg prune --keep-last 1 $work/borg-repo && borg compact $work/borg-repo";;
    esac
  fi
done
# Restores are deleted only now: ext4 passes over inodes freed in the last minutes one by one
# when it allocates (`recently_deleted`: 60 s, or 300 s while the inode table block is
# dirty), which would slow the next tool's restore and not the first one's. So leave at
# least 6 minutes between two runs that restore; on a VM whose balloon reports free pages to
# the host, page cache freed by the deletion also costs a host fault when used again.
rm -rf "$work"/*-restore

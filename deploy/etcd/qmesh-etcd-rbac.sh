#!/bin/sh
# qmesh-etcd-rbac.sh: etcd v3 users and roles for qmesh's membership.
#
# Every qmesh host daemon registers its own entry at <prefix><host> under a lease and
# watches the whole <prefix>. etcd run with --client-cert-auth takes the Common Name (CN)
# of a client's TLS certificate as the client's etcd user, so a host's certificate
# (CN=<host>) makes it etcd user <host>. This script gives each such user one role,
# qmesh-host-<host>, that may READ the whole prefix and WRITE ONLY its own key: a
# compromised or misconfigured host can read the membership but cannot add, change or
# delete another host's entry.
#
# It talks to the cluster with etcdctl (v3 API) and etcdctl's own environment:
# ETCDCTL_ENDPOINTS, ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY (the root user's client
# certificate, CN=root, once auth is enabled). Safe to run again: existing users, roles
# and grants are kept, and any other permission found on a host's role (an old prefix, a
# hand-made grant) is revoked, so each role holds exactly the two permissions above.
set -eu
set -f # no globbing: role names read back from etcd are split into words below

me=qmesh-etcd-rbac.sh
ETCDCTL_BIN=${QMESH_ETCDCTL:-etcdctl}
# etcdctl 3.4's user and role commands wait without any deadline for a cluster that does not
# answer (their requests carry no timeout, unlike get/put), so each call is bounded here.
ETCDCTL_LIMIT=${QMESH_ETCDCTL_TIMEOUT:-30}
export ETCDCTL_API=3

usage() {
  cat <<EOF
Usage: $me [--enable-auth] <prefix> <host> [<host>...]

For each <host>: etcd user <host> (no password: it authenticates by its TLS client
certificate, CN=<host>), role qmesh-host-<host> with
  readwrite  <prefix><host>   (exactly this key)
  read       <prefix>*        (every key under the prefix)
and the role granted to the user.

  <prefix>       etcd key prefix of the hosts' entries; starts and ends with "/",
                 e.g. /qmesh/example.org/hosts/
  <host>         host name as in its certificate's CN: a DNS label,
                 [a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?
  --enable-auth  also make sure user root (role root) exists and run
                 'etcdctl auth enable'. Without it the roles are created but etcd
                 only enforces them once authentication is enabled.
  -h, --help     this text

Connection and credentials come from etcdctl's environment: ETCDCTL_ENDPOINTS,
ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY (use root's client certificate).
QMESH_ETCDCTL names the etcdctl binary (default: etcdctl on PATH);
QMESH_ETCDCTL_TIMEOUT bounds each etcdctl call, in seconds (default 30).
EOF
}

die() {
  printf '%s: %s\n' "$me" "$*" >&2
  exit 1
}

usage_error() {
  printf '%s: %s\n' "$me" "$*" >&2
  printf "Run '%s --help' for usage.\n" "$me" >&2
  exit 2
}

# etcdctl prints a JSON "retrying of unary invoker failed" line before its "Error: ..." line;
# keep only what a person needs to read.
tidy() {
  printf '%s\n' "$1" | grep -v '^{"level":"warn"' || true
}

hint() {
  case $1 in
    *"permission denied"* | *"user name is empty"* | *"invalid auth token"*)
      printf '\n(hint: run with the root user'"'"'s client certificate: ETCDCTL_CERT/ETCDCTL_KEY of a certificate with CN=root)' ;;
    *"connection refused"* | *"deadline exceeded"* | *"did not answer"*)
      printf '\n(hint: check ETCDCTL_ENDPOINTS and that ETCDCTL_CACERT/ETCDCTL_CERT/ETCDCTL_KEY are set for a TLS cluster)' ;;
  esac
}

# run_ctl <args...>: etcdctl, killed after $ETCDCTL_LIMIT s where timeout(1) exists (exit 124).
if command -v timeout >/dev/null 2>&1; then
  run_ctl() { timeout "$ETCDCTL_LIMIT" "$ETCDCTL_BIN" "$@"; }
else
  run_ctl() { "$ETCDCTL_BIN" "$@"; }
fi

# ctl <what> <args...>: runs etcdctl; on failure exits naming <what> with etcdctl's error.
ctl() {
  what=$1
  shift
  rc=0
  out=$(run_ctl "$@" 2>&1) || rc=$?
  [ "$rc" -ne 0 ] || return 0
  [ "$rc" -ne 124 ] || out="etcdctl did not answer within $ETCDCTL_LIMIT s"
  die "$what failed: $(tidy "$out")$(hint "$out")"
}

# ctl_add <already-exists message> <what> <args...>: like ctl, but "already exists" is fine.
ctl_add() {
  exists=$1
  what=$2
  shift 2
  rc=0
  out=$(run_ctl "$@" 2>&1) || rc=$?
  [ "$rc" -ne 0 ] || return 0
  case $out in
    *"$exists"*) return 0 ;;
  esac
  [ "$rc" -ne 124 ] || out="etcdctl did not answer within $ETCDCTL_LIMIT s"
  die "$what failed: $(tidy "$out")$(hint "$out")"
}

enable_auth=0
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --enable-auth) enable_auth=1; shift ;;
    --) shift; break ;;
    -*) usage_error "unknown option: $1" ;;
    *) break ;;
  esac
done

[ $# -ge 2 ] || usage_error "need a prefix and at least one host"
prefix=$1
shift

case $prefix in
  /*/) ;;
  *) usage_error "prefix must start and end with \"/\" (e.g. /qmesh/example.org/hosts/), got \"$prefix\"" ;;
esac
case $prefix in
  *[!A-Za-z0-9._~:@+=,/-]*) usage_error "prefix \"$prefix\" may only contain letters, digits and . _ ~ : @ + = , / -" ;;
esac
# The keys of a prefix permission are [prefix, prefix with its last byte plus one): for a
# prefix ending in "/", that end is the prefix with "0" in place of the last "/". etcdctl
# shows it that way too, which the drift check below relies on.
prefix_end=${prefix%/}0

for host in "$@"; do
  case $host in
    '' | -* | *- | *[!a-z0-9-]*)
      usage_error "host \"$host\" is not a DNS label ([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)" ;;
  esac
  [ ${#host} -le 63 ] || usage_error "host \"$host\" is longer than 63 characters"
  [ "$host" != root ] || usage_error "host may not be named \"root\": etcd's root user is the administrator"
done

command -v "$ETCDCTL_BIN" >/dev/null 2>&1 || die "$ETCDCTL_BIN not found (install etcd-client, or set QMESH_ETCDCTL)"

tab=$(printf '\t')

# Fails fast, with etcdctl's own timeouts, where the cluster cannot be reached; any client
# with a certificate the cluster trusts may list the members.
ctl "reaching the cluster (etcdctl member list; endpoints: ${ETCDCTL_ENDPOINTS:-etcdctl default})" member list

# Revokes every permission of role $1 except readwrite on key $2 and read on the prefix.
# etcdctl -w fields prints each permission as Go-quoted "Key" and "RangeEnd" lines.
revoke_extras() {
  role=$1
  own_key=$2
  ctl "reading role $role" role get "$role" -w fields
  fields=$out
  perms=$(printf '%s\n' "$fields" | awk '
    /^"Key" : /      { key = substr($0, 9); next }
    /^"RangeEnd" : / { print key "\t" substr($0, 14) }')
  [ -n "$perms" ] || return 0
  while IFS=$tab read -r qkey qend; do
    case $qkey in *\\*) die "role $role has a permission on a key with escaped bytes ($qkey); inspect it with 'etcdctl role get $role' and revoke it by hand" ;; esac
    pkey=${qkey#\"}
    pkey=${pkey%\"}
    case $qend in
      '"\x00"') pend=FROM_KEY ;;
      *\\*) die "role $role has a permission with range end $qend; inspect it with 'etcdctl role get $role' and revoke it by hand" ;;
      *) pend=${qend#\"}; pend=${pend%\"} ;;
    esac
    if [ "$pkey" = "$own_key" ] && [ -z "$pend" ]; then continue; fi
    if [ "$pkey" = "$prefix" ] && [ "$pend" = "$prefix_end" ]; then continue; fi
    if [ "$pend" = FROM_KEY ]; then
      shown="[$pkey, <open ended>)"
      ctl "revoking $shown from role $role" role revoke-permission "$role" --from-key "$pkey"
    elif [ -z "$pend" ]; then
      shown=$pkey
      ctl "revoking $shown from role $role" role revoke-permission "$role" "$pkey"
    else
      shown="[$pkey, $pend)"
      ctl "revoking $shown from role $role" role revoke-permission "$role" "$pkey" "$pend"
    fi
    printf '%s: role %s: revoked a permission qmesh does not grant: %s\n' "$me" "$role" "$shown" >&2
  done <<EOF
$perms
EOF
}

for host in "$@"; do
  role=qmesh-host-$host
  key=$prefix$host
  ctl_add "user name already exists" "adding user $host" user add "$host" --no-password
  ctl_add "role name already exists" "adding role $role" role add "$role"
  ctl "granting readwrite on $key to $role" role grant-permission "$role" readwrite "$key"
  ctl "granting read on prefix $prefix to $role" role grant-permission "$role" read --prefix "$prefix"
  revoke_extras "$role" "$key"
  ctl "granting role $role to user $host" user grant-role "$host" "$role"
  ctl "reading user $host" user get "$host"
  roles=$(printf '%s\n' "$out" | sed -n 's/^Roles: *//p')
  for r in $roles; do
    [ "$r" = "$role" ] || printf '%s: warning: user %s also has role %s, which may let it write more than its own key\n' "$me" "$host" "$r" >&2
  done
  printf '%s: %s may write %s and read %s*\n' "$me" "$host" "$key" "$prefix"
done

if [ "$enable_auth" = 1 ]; then
  ctl_add "user name already exists" "adding user root" user add root --no-password
  ctl "granting role root to user root" user grant-role root root
  ctl "enabling authentication" auth enable
  printf '%s: authentication is enabled\n' "$me"
fi

#!/usr/bin/env bash
# Builds the envtest binaries (etcd, kube-apiserver, kubectl) from Go modules,
# because no prebuilt ones can be downloaded here.
#
#   hack/envtest/build.sh [OUT_DIR]
#
# OUT_DIR defaults to ${XDG_CACHE_HOME:-$HOME/.cache}/palaver/envtest/<k8s version>,
# outside the repo, so every clone on a machine shares one build. Progress goes
# to stderr; stdout gets only the directory, to use as KUBEBUILDER_ASSETS:
#
#   export KUBEBUILDER_ASSETS=$(hack/envtest/build.sh)
#
# It is idempotent: a binary already there with the pinned version is kept.
# Binaries are written under a temporary name and moved into place, so an
# interrupted build leaves nothing half-written.
#
# The versions are pinned in the scratch modules' go.mod files only:
#   hack/envtest/etcd/go.mod        go.etcd.io/etcd/server/v3
#   hack/envtest/kubernetes/go.mod  k8s.io/kubernetes (+ staging replaces)
# These modules are not part of go.work; they are built with GOWORK=off.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export GOWORK=off CGO_ENABLED=0

say() { echo "$*" >&2; }

modversion() { # modversion DIR MODULE
	go -C "$1" list -m -f '{{.Version}}' "$2"
}

kube_version=$(modversion "$here/kubernetes" k8s.io/kubernetes) # v1.37.2
etcd_version=$(modversion "$here/etcd" go.etcd.io/etcd/server/v3) # v3.6.16
IFS=. read -r kube_major kube_minor _ <<<"${kube_version#v}"

out=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/palaver/envtest/${kube_version#v}}
mkdir -p "$out"
out=$(cd "$out" && pwd)

tmp=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# What each binary reports about its version.
version_of() { # version_of NAME
	case $1 in
	etcd) "$out/etcd" --version 2>/dev/null | sed -n 's/^etcd Version: /v/p' ;;
	kube-apiserver) "$out/kube-apiserver" --version 2>/dev/null | sed -n 's/^Kubernetes //p' ;;
	kubectl) "$out/kubectl" version --client 2>/dev/null | sed -n 's/^Client Version: //p' ;;
	esac
}

# build NAME VERSION MODULE_DIR PACKAGE ESTIMATE [go build flags...]
build() {
	local name=$1 want=$2 dir=$3 pkg=$4 estimate=$5
	shift 5
	if [[ -x $out/$name ]]; then
		local have
		have=$(version_of "$name" || true)
		if [[ $have == "$want" ]]; then
			say "$name $have already built: $out/$name"
			return
		fi
		say "$name in $out reports '${have:-no version}', want $want: rebuilding"
	fi
	say "building $name $want from Go modules ($estimate, once)..."
	local start=$SECONDS
	go -C "$dir" build -mod=readonly -trimpath -buildvcs=false "$@" -o "$tmp/$name" "$pkg"
	mv -f "$tmp/$name" "$out/$name"
	say "built $name $(version_of "$name") in $((SECONDS - start))s: $out/$name"
}

# component-base/version's variables; DefaultKubeBinaryVersion already says 1.37.
v=k8s.io/component-base/version
kube_ldflags="-s -w -X $v.gitVersion=$kube_version -X $v.gitMajor=$kube_major -X $v.gitMinor=$kube_minor -X $v.gitTreeState=clean"

build etcd "$etcd_version" "$here/etcd" . "about 2 minutes" -ldflags "-s -w"
build kube-apiserver "$kube_version" "$here/kubernetes" ./kube-apiserver "about 5 minutes" -ldflags "$kube_ldflags"
build kubectl "$kube_version" "$here/kubernetes" ./kubectl "about 1 minute" -ldflags "$kube_ldflags"

say "envtest binaries ready: export KUBEBUILDER_ASSETS=$out"
echo "$out"

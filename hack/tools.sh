#!/usr/bin/env bash
# Builds the command-line tools the deployment tests run, from Go modules,
# once per machine, outside the clone:
#
#   hack/tools.sh helm        # prints the path of the helm binary
#   hack/tools.sh prometheus  # prints the path of the prometheus server
#
# The version is pinned in the tool's scratch module (hack/<tool>/go.mod,
# not part of go.work, built with GOWORK=off). The binary goes to
# ${XDG_CACHE_HOME:-$HOME/.cache}/palaver/tools/<tool>-<version>; progress
# goes to stderr, stdout gets only the path. A binary already there is kept;
# a build is written under a temporary name and moved into place, so an
# interrupted build leaves nothing half-written.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export GOWORK=off CGO_ENABLED=0

tool=${1:?usage: hack/tools.sh helm|prometheus}
tags=
case $tool in
helm)
	dir=$here/helm
	module=helm.sh/helm/v3
	pkg=helm.sh/helm/v3/cmd/helm
	version=$(go -C "$dir" list -m -f '{{.Version}}' "$module")
	# As Helm's own Makefile: the Kubernetes version helm template and lint
	# assume is that of the client-go it is built with (v0.37 -> 1.37).
	kube=$(go -C "$dir" list -m -f '{{.Version}}' k8s.io/client-go)
	IFS=. read -r _ kube_minor _ <<<"${kube#v}"
	ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
	for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
		ldflags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$kube_minor"
	done
	;;
prometheus)
	dir=$here/prometheus
	module=github.com/prometheus/prometheus
	pkg=github.com/prometheus/prometheus/cmd/prometheus
	version=$(go -C "$dir" list -m -f '{{.Version}}' "$module")
	# Static, file and HTTP targets only: the cloud and Kubernetes service
	# discoveries (and their SDKs) stay out of the build. The web UI's
	# assets are not built in: the tests use the HTTP API.
	tags=remove_all_sd
	ldflags="-s -w -X github.com/prometheus/common/version.Version=${version#v}"
	;;
*)
	echo "hack/tools.sh: unknown tool $tool (known: helm, prometheus)" >&2
	exit 2
	;;
esac

out=${XDG_CACHE_HOME:-$HOME/.cache}/palaver/tools
bin=$out/$tool-$version
if [[ ! -x $bin ]]; then
	mkdir -p "$out"
	echo "building $tool $version from Go modules (a few minutes, once)..." >&2
	start=$SECONDS
	tmp=$(mktemp -d "$out/.build.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	go -C "$dir" build -mod=readonly -trimpath -buildvcs=false -tags "$tags" -ldflags "$ldflags" -o "$tmp/$tool" "$pkg"
	mv -f "$tmp/$tool" "$bin"
	echo "built $tool $version in $((SECONDS - start))s: $bin" >&2
fi
echo "$bin"

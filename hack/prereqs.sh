#!/usr/bin/env bash
# Checks the tools Palaver's build and tests need, and says what to install
# when one is missing. Usage: hack/prereqs.sh go [java] [mvn] [node] [chromium]
set -uo pipefail

missing=0
need() { # need WHAT HOW
	echo "missing prerequisite: $1" >&2
	echo "  install: $2" >&2
	missing=1
}

for tool in "$@"; do
	case $tool in
	go)
		if ! command -v go >/dev/null; then
			need "Go 1.26 or newer" "https://go.dev/dl/ (or your package manager)"
		elif ! go version | grep -Eq 'go1\.(2[6-9]|[3-9][0-9])'; then
			need "Go 1.26 or newer (found: $(go version))" "https://go.dev/dl/"
		fi ;;
	java)
		if ! command -v java >/dev/null; then
			need "Java 17 or newer (runs the real Kafka broker in tests)" "apt-get install openjdk-17-jre-headless (or any JDK 17+)"
		else
			major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
			if [[ -z $major || ${major%%.*} -lt 17 ]]; then
				need "Java 17 or newer (found: ${major:-unknown})" "apt-get install openjdk-17-jre-headless"
			fi
		fi ;;
	mvn)
		command -v mvn >/dev/null || need "Maven 3 (fetches the Kafka broker jars from Maven Central)" "apt-get install maven" ;;
	node)
		if ! command -v node >/dev/null; then
			need "Node.js 20 or newer (drives the browser tests)" "https://nodejs.org or NodeSource's nodejs package (Debian 12's own is 18)"
		elif ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)'; then
			need "Node.js 20 or newer (found: $(node --version))" "https://nodejs.org or NodeSource's nodejs package"
		fi ;;
	chromium)
		command -v chromium >/dev/null || need "Chromium (browser tests of the web UI)" "apt-get install chromium" ;;
	*) echo "prereqs.sh: unknown tool $tool" >&2; exit 2 ;;
	esac
done
exit $missing

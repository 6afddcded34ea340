// Command kube-apiserver is the upstream API server built from
// k8s.io/kubernetes (its cmd/kube-apiserver/apiserver.go), for envtest.
package main

import (
	"os"
	_ "time/tzdata" // time zones for CronJob validation

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}

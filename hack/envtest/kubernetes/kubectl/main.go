// Command kubectl is the upstream kubectl built from k8s.io/kubectl (as in
// k8s.io/kubernetes's cmd/kubectl/kubectl.go), for tests that run
// `kubectl apply --dry-run=server` against envtest.
package main

import (
	"os"

	_ "k8s.io/client-go/plugin/pkg/client/auth" // client auth plugins
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	// Set verbosity before the command is built: building it already logs
	// (plugins, .kuberc), and flag parsing happens only inside Run.
	logs.GlogSetter(cmd.GetLogVerbosity(os.Args)) //nolint:errcheck // best effort, as upstream
	if err := cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand()); err != nil {
		util.CheckErr(err)
	}
}

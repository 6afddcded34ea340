// Package deploy tests the deployment files without a cluster: the Helm
// chart (lint, templates over several value combinations, its contract
// with the binaries), the k8s/ manifests, the dashboards and the Tiltfile.
// Manifests are applied with `kubectl apply --dry-run=server` to a real
// kube-apiserver (envtest) that serves our CRD and the real CRDs of
// Strimzi, the Prometheus Operator and Gateway API (../shared/crds beside
// the repository; the tests that need them skip without it).
package deploy

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
)

var (
	// repoRoot is the repository's root directory.
	repoRoot = filepath.Join("..", "..", "..")
	// sharedCRDs holds the third-party CRDs.
	sharedCRDs = filepath.Join(repoRoot, "..", "shared", "crds")

	testEnv    *envtest.Environment
	adminCfg   *rest.Config
	k8sClient  client.Client
	kubeconfig string // an administrator's kubeconfig file, for kubectl
	scheme     = runtime.NewScheme()
)

// The folders of ../shared/crds the tests install.
var thirdPartyCRDDirs = []string{"strimzi-1.2.0", "prometheus-operator-v0.93.0", "gateway-api-v1.6.1"}

func TestMain(m *testing.M) {
	flag.Parse()
	logf.SetLogger(logr.Discard()) // envtest's own messages
	if err := errors.Join(clientgoscheme.AddToScheme(scheme), chatv1alpha1.AddToScheme(scheme)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if testEnv != nil {
		if err := testEnv.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop envtest: %v\n", err)
		}
	}
	if kubeconfigDir != "" {
		_ = os.RemoveAll(kubeconfigDir)
	}
	os.Exit(code)
}

var (
	apiServerOnce sync.Once
	apiServerErr  error
	kubeconfigDir string
)

// apiServer starts etcd and kube-apiserver (envtest) on first use, with
// our CRD and, when present, the third-party ones. Tests that only render
// the chart do not pay for it.
func apiServer(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a kube-apiserver and etcd (envtest): skipped in -short mode")
	}
	apiServerOnce.Do(func() { apiServerErr = startAPIServer() })
	if apiServerErr != nil {
		t.Fatal(apiServerErr)
	}
}

func startAPIServer() error {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	for _, name := range []string{"etcd", "kube-apiserver", "kubectl"} {
		if _, err := os.Stat(filepath.Join(assets, name)); err != nil {
			return fmt.Errorf("KUBEBUILDER_ASSETS=%q: %w\n"+
				"The deployment tests run a real kube-apiserver and kubectl: build them once with `make envtest`\n"+
				"and export KUBEBUILDER_ASSETS=<the directory it prints>, or run `make test-operator`", assets, err)
		}
	}
	crdDirs := []string{filepath.Join(repoRoot, "operator", "config", "crd", "bases")}
	if _, err := os.Stat(sharedCRDs); err == nil {
		for _, d := range thirdPartyCRDDirs {
			crdDirs = append(crdDirs, filepath.Join(sharedCRDs, d))
		}
	}
	testEnv = &envtest.Environment{CRDDirectoryPaths: crdDirs, ErrorIfCRDPathMissing: true}
	cfg, err := testEnv.Start()
	if err != nil {
		return fmt.Errorf("start envtest: %w", err)
	}
	adminCfg = cfg
	if k8sClient, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return err
	}
	if kubeconfigDir, err = os.MkdirTemp("", "palaver-deploy-"); err != nil {
		return err
	}
	kubeconfig, err = writeKubeconfig(kubeconfigDir, envtest.User{Name: "deploy-test", Groups: []string{"system:masters"}})
	return err
}

// writeKubeconfig writes a kubeconfig of a new envtest user into dir.
func writeKubeconfig(dir string, u envtest.User) (string, error) {
	user, err := testEnv.AddUser(u, adminCfg)
	if err != nil {
		return "", fmt.Errorf("add user %s: %w", u.Name, err)
	}
	b, err := user.KubeConfig()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, strings.NewReplacer(":", "-", "/", "-").Replace(u.Name)+".kubeconfig")
	return path, os.WriteFile(path, b, 0o600)
}

// requireThirdPartyCRDs skips a test that applies Strimzi, Prometheus
// Operator or Gateway API objects when their CRDs are not there.
func requireThirdPartyCRDs(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(sharedCRDs); err != nil {
		t.Skipf("no third-party CRDs at %s (Strimzi 1.2.0, prometheus-operator v0.93.0, Gateway API v1.6.1): "+
			"objects of those APIs cannot be checked against the API server", sharedCRDs)
	}
}

// newNamespace creates a namespace of its own for one test. (envtest runs
// no namespace controller, so deleted namespaces would stay Terminating:
// they are left for envtest's shutdown.)
func newNamespace(t *testing.T) string {
	t.Helper()
	apiServer(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "deploy-test-"}}
	if err := k8sClient.Create(t.Context(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	return ns.Name
}

// ensureNamespace creates the namespace name unless it exists.
func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	apiServer(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := client.IgnoreAlreadyExists(k8sClient.Create(t.Context(), ns)); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

// command runs a program and returns its standard output; a failure
// fails the test with the standard error.
func command(t *testing.T, stdin []byte, name string, args ...string) string {
	t.Helper()
	out, err := tryCommand(t, stdin, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func tryCommand(t *testing.T, stdin []byte, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// kubectl runs the envtest kubectl as an administrator.
func kubectl(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	apiServer(t)
	return command(t, stdin, filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"),
		append([]string{"--kubeconfig", kubeconfig}, args...)...)
}

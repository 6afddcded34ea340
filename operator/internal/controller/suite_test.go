package controller

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
)

// k8sClient talks to the envtest API server directly, without the manager's
// cache, so a test reads what it just wrote.
var k8sClient client.Client

// TestMain starts etcd and kube-apiserver (envtest), installs the CRDs from
// config/crd/bases and runs the real manager with the ChatRoom reconciler
// while the tests run.
func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	if err := checkAssets(os.Getenv("KUBEBUILDER_ASSETS")); err != nil {
		fmt.Fprintf(os.Stderr, "%v\n"+
			"The controller tests run a real etcd and kube-apiserver. Build them once with\n"+
			"`make envtest` at the repository root and export KUBEBUILDER_ASSETS=<the directory it prints>,\n"+
			"or run `make test` in operator/, which does both.\n", err)
		return 1
	}
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true)))

	testEnv := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := testEnv.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "start envtest: %v\n", err)
		return 1
	}
	defer func() {
		if err := testEnv.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop envtest: %v\n", err)
		}
	}()

	scheme := runtime.NewScheme()
	if err := errors.Join(clientgoscheme.AddToScheme(scheme), chatv1alpha1.AddToScheme(scheme)); err != nil {
		fmt.Fprintf(os.Stderr, "build scheme: %v\n", err)
		return 1
	}
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintf(os.Stderr, "create client: %v\n", err)
		return 1
	}

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "create manager: %v\n", err)
		return 1
	}
	if err := (&ChatRoomReconciler{
		Client:                   mgr.GetClient(),
		Recorder:                 mgr.GetEventRecorder("chatroom-controller"),
		KafkaBootstrapServers:    []string{"localhost:9092"},
		DefaultReplicationFactor: 1,
	}).SetupWithManager(mgr); err != nil {
		fmt.Fprintf(os.Stderr, "set up chatroom controller: %v\n", err)
		return 1
	}

	ctx, cancel := context.WithCancel(context.Background())
	mgrDone := make(chan error, 1)
	go func() { mgrDone <- mgr.Start(ctx) }()

	code := m.Run()

	cancel()
	if err := <-mgrDone; err != nil {
		fmt.Fprintf(os.Stderr, "manager: %v\n", err)
		code = 1
	}
	return code
}

// checkAssets reports what is missing from the envtest binaries directory.
func checkAssets(dir string) error {
	if dir == "" {
		return errors.New("KUBEBUILDER_ASSETS is not set")
	}
	for _, name := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("KUBEBUILDER_ASSETS=%s: %w", dir, err)
		}
	}
	return nil
}

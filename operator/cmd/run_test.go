package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"palaver.dev/services/kafkabus"
)

// TestRunOutsideCluster runs the operator as `make run` and a user outside
// a cluster do, against the kubeconfig of a real API server: with leader
// election and no namespace for its Lease it says which flag to set; with
// --leader-election-namespace it takes the Lease there.
func TestRunOutsideCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a kube-apiserver and etcd (envtest): skipped in -short mode")
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("needs the envtest binaries: KUBEBUILDER_ASSETS")
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	admin, err := env.AddUser(envtest.User{Name: "developer", Groups: []string{"system:masters"}}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", path)

	// The documented defaults, but for the ports; Kafka is not needed to
	// start (nothing is reconciled here).
	c := config{
		metricsAddr: "0", probeAddr: "0", leaderElect: true,
		kafka:     kafkabus.Config{Brokers: []string{"127.0.0.1:9"}, ClientID: "palaver-operator"},
		defaultRF: 1, concurrency: 1, resync: 30 * time.Second, kafkaTimeout: time.Second,
		deletionWait: time.Minute, retryMax: time.Minute, sweepInterval: time.Minute,
	}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	err = run(t.Context(), c)
	if err == nil || !strings.Contains(err.Error(), "--leader-election-namespace") {
		t.Fatalf("run without a Lease namespace outside a cluster: %v, want a hint at --leader-election-namespace", err)
	}

	c.leaderNS = "default"
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- run(ctx, c) }()
	k8s, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var lease coordinationv1.Lease
		err := k8s.Get(t.Context(), client.ObjectKey{Namespace: "default", Name: "operator.chat.palaver.dev"}, &lease)
		if err == nil && lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != "" {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the operator stopped: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Lease held in namespace default: %v", err)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the operator did not stop within a minute")
	}
}

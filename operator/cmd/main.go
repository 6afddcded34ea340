// Command operator runs the Palaver operator: a controller manager whose
// ChatRoom reconciler keeps one Kafka topic per ChatRoom.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
	"palaver.dev/operator/internal/controller"
)

var setupLog = ctrl.Log.WithName("setup")

type config struct {
	metricsAddr              string
	probeAddr                string
	leaderElect              bool
	kafkaBootstrapServers    []string
	defaultReplicationFactor int32
}

func main() {
	var (
		cfg       config
		bootstrap string
		rf        int
	)
	flag.StringVar(&cfg.metricsAddr, "metrics-bind-address", ":8080",
		"Address the Prometheus metrics endpoint binds to; 0 disables it.")
	flag.StringVar(&cfg.probeAddr, "health-probe-bind-address", ":8081",
		"Address the /healthz and /readyz endpoints bind to.")
	flag.BoolVar(&cfg.leaderElect, "leader-elect", true,
		"Elect a leader so that only one replica reconciles at a time.")
	flag.StringVar(&bootstrap, "kafka-bootstrap-servers", os.Getenv("KAFKA_BOOTSTRAP_SERVERS"),
		"Comma-separated Kafka bootstrap servers (host:port). Env: KAFKA_BOOTSTRAP_SERVERS.")
	flag.IntVar(&rf, "default-replication-factor", 3,
		"Replication factor of topics whose ChatRoom sets none.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	cfg.kafkaBootstrapServers = splitList(bootstrap)
	if len(cfg.kafkaBootstrapServers) == 0 {
		fmt.Fprintln(os.Stderr, "operator: --kafka-bootstrap-servers (or KAFKA_BOOTSTRAP_SERVERS) is required")
		os.Exit(2)
	}
	if rf < 1 || rf > 1<<15 {
		fmt.Fprintf(os.Stderr, "operator: --default-replication-factor must be between 1 and 32768, got %d\n", rf)
		os.Exit(2)
	}
	cfg.defaultReplicationFactor = int32(rf)

	if err := run(cfg); err != nil {
		setupLog.Error(err, "operator stopped")
		os.Exit(1)
	}
}

// run builds the manager, registers the reconcilers and runs until SIGTERM
// or SIGINT; the manager then stops its controllers and, as leader, releases
// its lease.
func run(cfg config) error {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(chatv1alpha1.AddToScheme(scheme))

	restConfig, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: cfg.metricsAddr},
		HealthProbeBindAddress: cfg.probeAddr,
		LeaderElection:         cfg.leaderElect,
		LeaderElectionID:       "operator.chat.palaver.dev",
		// main returns as soon as the manager stops, so stepping down on
		// shutdown is safe, and the next leader need not wait out the lease.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}

	if err := (&controller.ChatRoomReconciler{
		Client:                   mgr.GetClient(),
		Recorder:                 mgr.GetEventRecorder("chatroom-controller"),
		KafkaBootstrapServers:    cfg.kafkaBootstrapServers,
		DefaultReplicationFactor: cfg.defaultReplicationFactor,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up chatroom controller: %w", err)
	}

	if err := errors.Join(
		mgr.AddHealthzCheck("healthz", healthz.Ping),
		mgr.AddReadyzCheck("readyz", healthz.Ping),
	); err != nil {
		return fmt.Errorf("add health checks: %w", err)
	}

	setupLog.Info("starting manager", "kafka", cfg.kafkaBootstrapServers,
		"defaultReplicationFactor", cfg.defaultReplicationFactor, "leaderElect", cfg.leaderElect)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

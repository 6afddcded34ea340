// Command operator runs the Palaver operator: a controller manager whose
// ChatRoom reconciler keeps one Kafka topic per ChatRoom and publishes the
// rooms to the registry topic the services read.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
	"palaver.dev/operator/internal/controller"
	"palaver.dev/operator/internal/topics"
	"palaver.dev/services/kafkabus"
	"palaver.dev/services/room"
)

var setupLog = ctrl.Log.WithName("setup")

type config struct {
	metricsAddr    string
	probeAddr      string
	leaderElect    bool
	leaderNS       string
	throttle       int64
	kafka          kafkabus.Config
	credentialsDir string
	defaultRF      int
	concurrency    int
	resync         time.Duration
	kafkaTimeout   time.Duration
	deletionWait   time.Duration
	retryMax       time.Duration
	sweepInterval  time.Duration
}

func main() {
	var cfg config
	fs := flag.CommandLine
	cfg.registerFlags(fs)
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	if err := cfg.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "operator: %v\n", err)
		os.Exit(2)
	}
	if err := run(ctrl.SetupSignalHandler(), cfg); err != nil {
		setupLog.Error(err, "operator stopped")
		os.Exit(1)
	}
}

// registerFlags binds c to the operator's own flags on fs (docs/operator.md,
// "Running it", lists each); controller-runtime's --zap-* logging flags are
// bound next to them in main.
func (c *config) registerFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.metricsAddr, "metrics-bind-address", ":8080",
		"Address the Prometheus metrics endpoint binds to; 0 disables it.")
	fs.StringVar(&c.probeAddr, "health-probe-bind-address", ":8081",
		"Address the /healthz and /readyz endpoints bind to.")
	fs.BoolVar(&c.leaderElect, "leader-elect", true,
		"Elect a leader so that only one replica reconciles at a time.")
	fs.StringVar(&c.leaderNS, "leader-election-namespace", "",
		"Namespace of the leader election Lease; default the operator pod's. Outside a cluster, name one or set --leader-elect=false.")
	fs.Int64Var(&c.throttle, "reassignment-throttle", 50<<20,
		"Replication throttle of replica reassignments, in bytes per second per broker (Kafka's leader and follower replication throttled rates), set while replicas move; 0 for none.")
	c.kafka.RegisterFlags(fs, kafkabus.Config{ClientID: "palaver-operator"})
	fs.StringVar(&c.credentialsDir, "kafka-credentials-dir", os.Getenv("PALAVER_KAFKA_CREDENTIALS_DIR"),
		"Directory of a mounted Secret with Kafka credentials: ca.crt (turns TLS on), user.crt and user.key "+
			"(mutual TLS), username and password (SASL SCRAM-SHA-512). Explicit --kafka-* flags win, but a ca.crt turns TLS on even with --kafka-tls=false. ($PALAVER_KAFKA_CREDENTIALS_DIR)")
	fs.IntVar(&c.defaultRF, "default-replication-factor", 3,
		"Replication factor of topics whose ChatRoom sets none.")
	fs.IntVar(&c.concurrency, "max-concurrent-reconciles", 64,
		"ChatRooms reconciled at once; their Kafka calls are batched together.")
	fs.DurationVar(&c.resync, "kafka-resync-interval", 30*time.Second,
		"How often every room topic is re-read to find changes made outside the operator.")
	fs.DurationVar(&c.kafkaTimeout, "kafka-timeout", 10*time.Second,
		"Timeout of each Kafka request.")
	fs.DurationVar(&c.deletionWait, "deletion-timeout", 5*time.Minute,
		"How long a ChatRoom's deletion waits for an unreachable Kafka before it completes without cleaning up.")
	fs.DurationVar(&c.sweepInterval, "registry-sweep-interval", 5*time.Minute,
		"How often registry entries of rooms that have no ChatRoom (left when a deletion gave up on Kafka) are removed.")
	fs.DurationVar(&c.retryMax, "kafka-retry-max", 5*time.Minute,
		"Longest wait between a room's retries after Kafka errors (the backoff starts at 1s).")
}

func (c *config) validate() error {
	if err := applyCredentialsDir(&c.kafka, c.credentialsDir); err != nil {
		return err
	}
	if err := c.kafka.Validate(); err != nil {
		return err
	}
	switch {
	case c.defaultRF < 1 || c.defaultRF > 1<<15-1:
		return fmt.Errorf("--default-replication-factor must be between 1 and 32767, got %d", c.defaultRF)
	case c.throttle < 0:
		return fmt.Errorf("--reassignment-throttle must not be negative, got %d", c.throttle)
	case c.concurrency < 1:
		return fmt.Errorf("--max-concurrent-reconciles must be at least 1, got %d", c.concurrency)
	case c.resync < time.Second || c.kafkaTimeout <= 0 || c.deletionWait <= 0 || c.retryMax < time.Second || c.sweepInterval < time.Second:
		return errors.New("--kafka-resync-interval, --kafka-retry-max and --registry-sweep-interval must be at least 1s, --kafka-timeout and --deletion-timeout positive")
	}
	return nil
}

// applyCredentialsDir points cfg at the credential files found in dir, the
// mount of a Kubernetes Secret (or a projected volume of several, such as
// Strimzi's cluster CA Secret and a KafkaUser's Secret). Settings made with
// flags are kept. Only file names are recorded: the secrets themselves are
// read when the clients are built, and never logged.
func applyCredentialsDir(cfg *kafkabus.Config, dir string) error {
	if dir == "" {
		return nil
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return fmt.Errorf("--kafka-credentials-dir %s: not a readable directory", dir)
	}
	has := func(name string) (string, bool) {
		p := filepath.Join(dir, name)
		_, err := os.Stat(p)
		return p, err == nil
	}
	if p, ok := has("ca.crt"); ok {
		cfg.TLS = true
		if cfg.TLSCAFile == "" {
			cfg.TLSCAFile = p
		}
	}
	crt, okCrt := has("user.crt")
	key, okKey := has("user.key")
	if okCrt && okKey && cfg.TLSCertFile == "" && cfg.TLSKeyFile == "" {
		cfg.TLS, cfg.TLSCertFile, cfg.TLSKeyFile = true, crt, key
	}
	if p, ok := has("password"); ok && cfg.SASLPasswordFile == "" {
		cfg.SASLPasswordFile = p
		if cfg.SASLMechanism == "" {
			cfg.SASLMechanism = kafkabus.SCRAMSHA512
		}
		if u, ok := has("username"); ok && cfg.SASLUsername == "" {
			b, err := os.ReadFile(u)
			if err != nil {
				return fmt.Errorf("read Kafka user name: %w", err)
			}
			cfg.SASLUsername = string(trimNewline(b))
		}
	}
	return nil
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// run builds the manager, the shared Kafka view and the reconciler, and
// runs until ctx ends (SIGTERM or SIGINT); the manager then stops its
// runnables and, as leader, releases its lease.
func run(ctx context.Context, cfg config) error {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(chatv1alpha1.AddToScheme(scheme))

	restConfig, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: cfg.metricsAddr},
		HealthProbeBindAddress:  cfg.probeAddr,
		LeaderElection:          cfg.leaderElect,
		LeaderElectionNamespace: cfg.leaderNS,
		LeaderElectionID:        "operator.chat.palaver.dev",
		// run returns as soon as the manager stops, so stepping down on
		// shutdown is safe, and the next leader need not wait out the lease.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		if cfg.leaderElect && cfg.leaderNS == "" {
			return fmt.Errorf("create manager (outside a cluster, set --leader-election-namespace or --leader-elect=false): %w", err)
		}
		return fmt.Errorf("create manager: %w", err)
	}

	admin, err := cfg.kafka.AdminClient()
	if err != nil {
		return err
	}
	defer admin.Close()
	cluster, err := kafkabus.New(cfg.kafka)
	if err != nil {
		return err
	}
	defer cluster.Close()

	opts := topics.Options{
		Resync: cfg.resync, Timeout: cfg.kafkaTimeout, Throttle: cfg.throttle,
		Metrics: topics.NewMetrics(metrics.Registry), Log: ctrl.Log.WithName("topics"),
	}
	prov := room.NewProvisioner(admin)
	view := topics.New(prov, opts)
	registry := topics.NewRegistry(cluster, prov, view, int16(cfg.defaultRF), opts)
	defer func() { _ = registry.Close() }()
	if err := mgr.Add(view); err != nil {
		return fmt.Errorf("add the Kafka view: %w", err)
	}
	registryLog := ctrl.Log.WithName("registry")
	if err := mgr.Add(&controller.RegistrySweeper{
		Reader:   mgr.GetAPIReader(),
		Entries:  room.NewRegistry(cluster, slog.New(logr.ToSlogHandler(registryLog))),
		Registry: registry,
		Interval: cfg.sweepInterval,
		Log:      registryLog,
	}); err != nil {
		return fmt.Errorf("add the registry sweeper: %w", err)
	}

	if err := (&controller.ChatRoomReconciler{
		Client:                   mgr.GetClient(),
		Recorder:                 mgr.GetEventRecorder("chatroom-controller"),
		View:                     view,
		Registry:                 registry,
		Metrics:                  controller.NewMetrics(metrics.Registry),
		DefaultReplicationFactor: int16(cfg.defaultRF),
		DeletionTimeout:          cfg.deletionWait,
		RetryMax:                 cfg.retryMax,
		MaxConcurrentReconciles:  cfg.concurrency,
	}).SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("set up chatroom controller: %w", err)
	}

	if err := errors.Join(
		mgr.AddHealthzCheck("healthz", healthz.Ping),
		mgr.AddReadyzCheck("readyz", healthz.Ping),
	); err != nil {
		return fmt.Errorf("add health checks: %w", err)
	}

	setupLog.Info("starting manager", "kafka", cfg.kafka.Brokers, "tls", cfg.kafka.TLS, "sasl", cfg.kafka.SASLMechanism,
		"defaultReplicationFactor", cfg.defaultRF, "leaderElect", cfg.leaderElect, "reassignmentThrottle", cfg.throttle)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}

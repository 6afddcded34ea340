package controller

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zapcore"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
	"palaver.dev/operator/internal/topics"
	"palaver.dev/services/kafkabus"
	"palaver.dev/services/kafkatest"
	"palaver.dev/services/room"
)

// The suite's shared parts, set up by TestMain.
var (
	// k8sClient talks to the envtest API server as an administrator,
	// without a cache, so a test reads what it just wrote.
	k8sClient client.Client
	testEnv   *envtest.Environment
	// operatorConfig is the identity the operators under test run as: a
	// user bound to config/rbac's roles only, which proves them sufficient.
	operatorConfig *rest.Config
	scheme         = runtime.NewScheme()
	// kafkaBootstrap is the suite's single-node Kafka broker.
	kafkaBootstrap string
)

// operatorUser is the user the operators under test authenticate as.
const operatorUser = "palaver-operator"

// TestMain starts etcd and kube-apiserver (envtest) with the CRD from
// config/crd/bases, binds the RBAC of config/rbac to the operator's user,
// and starts a real Kafka broker. Each test then runs its own operator (a
// real manager, see startOperator) on its own namespaces.
func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

// envtestSkipped says why the tests that need the API server skip: set in
// -short mode, which runs no API server (`make test-short`).
var envtestSkipped string

// needEnvtest skips a test that needs the API server when the suite runs
// without one.
func needEnvtest(t *testing.T) {
	t.Helper()
	if envtestSkipped != "" {
		t.Skip(envtestSkipped)
	}
}

func runSuite(m *testing.M) (code int) {
	flag.Parse()
	if testing.Short() {
		envtestSkipped = "needs a kube-apiserver and etcd (envtest): skipped in -short mode"
		return m.Run()
	}
	if err := checkAssets(os.Getenv("KUBEBUILDER_ASSETS")); err != nil {
		fmt.Fprintf(os.Stderr, "%v\n"+
			"The controller tests run a real etcd and kube-apiserver. Build them once with\n"+
			"`make envtest` at the repository root and export KUBEBUILDER_ASSETS=<the directory it prints>,\n"+
			"or run `make test` in operator/, which does both.\n", err)
		return 1
	}
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(zapcore.Level(zapLevel()))))
	if err := errors.Join(clientgoscheme.AddToScheme(scheme), chatv1alpha1.AddToScheme(scheme)); err != nil {
		fmt.Fprintf(os.Stderr, "build scheme: %v\n", err)
		return 1
	}

	testEnv = &envtest.Environment{
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
	// As ctrl.GetConfig does for the operator: no client-side rate limit,
	// the API server's priority and fairness applies.
	cfg.QPS = -1
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintf(os.Stderr, "create client: %v\n", err)
		return 1
	}
	if operatorConfig, err = setupOperatorUser(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "set up the operator's user: %v\n", err)
		return 1
	}

	kafkaBootstrap = os.Getenv(kafkatest.EnvBootstrap)
	if kafkaBootstrap == "" && !testing.Short() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		kc, err := kafkatest.Start(ctx, kafkatest.Options{Nodes: 1, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
		cancel()
		if err != nil {
			fmt.Fprintf(os.Stderr, "start Kafka: %v\n", err)
			return 1
		}
		kafkaBootstrap = kc.Bootstrap()
		defer func() {
			if err := kc.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "stop Kafka: %v\n", err)
			}
			if code != 0 {
				fmt.Fprintf(os.Stderr, "Kafka logs kept in %s\n%s", kc.Dir(), kc.LogTail(30))
				return
			}
			_ = os.RemoveAll(kc.Dir())
		}()
	}
	return m.Run()
}

// zapLevel is the operator's log level in tests: info, or debug with
// PALAVER_TEST_DEBUG set.
func zapLevel() int8 {
	if os.Getenv("PALAVER_TEST_DEBUG") != "" {
		return -1
	}
	return 0
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

// setupOperatorUser creates the ClusterRole of config/rbac/role.yaml (made
// from the +kubebuilder:rbac markers), binds it to the operator's user and
// returns that user's config. Leader election's Role is bound per test
// (bindLeaderElection).
func setupOperatorUser(admin *rest.Config) (*rest.Config, error) {
	ctx := context.Background()
	var role rbacv1.ClusterRole
	if err := decodeFile(filepath.Join("..", "..", "config", "rbac", "role.yaml"), &role); err != nil {
		return nil, err
	}
	if err := k8sClient.Create(ctx, &role); err != nil {
		return nil, fmt.Errorf("create %s: %w", role.Name, err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: ctrl.ObjectMeta{Name: "palaver-operator"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: operatorUser}},
	}
	if err := k8sClient.Create(ctx, binding); err != nil {
		return nil, fmt.Errorf("bind %s: %w", role.Name, err)
	}
	user, err := testEnv.AddUser(envtest.User{Name: operatorUser, Groups: []string{"system:authenticated"}}, admin)
	if err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(user.Config())
	cfg.QPS = -1
	return cfg, nil
}

// bindLeaderElection creates config/rbac's leader election Role in ns and
// binds it to the operator's user.
func bindLeaderElection(t *testing.T, ns string) {
	t.Helper()
	var role rbacv1.Role
	if err := decodeFile(filepath.Join("..", "..", "config", "rbac", "leader_election_role.yaml"), &role); err != nil {
		t.Fatal(err)
	}
	role.Namespace = ns
	binding := &rbacv1.RoleBinding{
		ObjectMeta: ctrl.ObjectMeta{Namespace: ns, Name: "leader-election"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: operatorUser}},
	}
	for _, o := range []client.Object{&role, binding} {
		if err := k8sClient.Create(t.Context(), o); err != nil {
			t.Fatal(err)
		}
	}
}

func decodeFile(path string, into any) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := utilyaml.NewYAMLOrJSONDecoder(f, 4096).Decode(into); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

// testOperator is one running operator under test.
type testOperator struct {
	view     *topics.View
	prov     *room.Provisioner // for the test to look at Kafka and change it behind the operator's back
	cluster  *kafkabus.Cluster
	registry *prometheus.Registry
}

// operatorOptions tunes startOperator.
type operatorOptions struct {
	bootstrap       string        // default: the suite's broker
	resync          time.Duration // default 1 s
	expectation     time.Duration // how long the view trusts its own changes; default the view's
	throttle        int64         // the reassignment throttle, bytes/s; default none
	deletionTimeout time.Duration // default 5 min
	leaderElection  bool
	defaultRF       int16 // default 1
	concurrency     int   // default: the reconciler's
}

// startOperator runs the operator as cmd/main.go wires it, restricted to
// the given namespaces, as the operator's user, until the test ends.
func startOperator(t *testing.T, o operatorOptions, namespaces ...string) *testOperator {
	t.Helper()
	if o.bootstrap == "" {
		o.bootstrap = kafkaBootstrap
	}
	if o.bootstrap == "" {
		t.Skip("needs a Kafka broker: skipped in -short mode")
	}
	if o.resync == 0 {
		o.resync = time.Second
	}
	if o.defaultRF == 0 {
		o.defaultRF = 1
	}
	nsCache := map[string]cache.Config{}
	for _, ns := range namespaces {
		nsCache[ns] = cache.Config{}
	}
	opts := ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: nsCache},
	}
	if o.leaderElection {
		bindLeaderElection(t, namespaces[0])
		opts.LeaderElection = true
		opts.LeaderElectionNamespace = namespaces[0]
		opts.LeaderElectionID = "operator.chat.palaver.dev"
		opts.LeaderElectionReleaseOnCancel = true
	}
	mgr, err := ctrl.NewManager(operatorConfig, opts)
	if err != nil {
		t.Fatal(err)
	}

	kcfg := kafkabus.Config{Brokers: strings.Split(o.bootstrap, ","), ClientID: "palaver-operator-test"}
	admin, err := kcfg.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	cluster, err := kafkabus.New(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)

	reg := prometheus.NewRegistry()
	topt := topics.Options{
		Resync: o.resync, Expectation: o.expectation, Throttle: o.throttle, RetryMin: 200 * time.Millisecond, Timeout: 5 * time.Second,
		Metrics: topics.NewMetrics(reg), Log: ctrl.Log.WithName("topics"),
	}
	prov := room.NewProvisioner(admin)
	view := topics.New(prov, topt)
	registry := topics.NewRegistry(cluster, prov, view, o.defaultRF, topt)
	t.Cleanup(func() { _ = registry.Close() })
	if err := mgr.Add(view); err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(&RegistrySweeper{
		Reader: mgr.GetAPIReader(), Entries: room.NewRegistry(cluster, nil), Registry: registry,
		Interval: 2 * time.Second, Log: ctrl.Log.WithName("registry"),
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &ChatRoomReconciler{
		Client:                   mgr.GetClient(),
		Recorder:                 mgr.GetEventRecorder("chatroom-controller"),
		View:                     view,
		Registry:                 registry,
		Metrics:                  NewMetrics(reg),
		DefaultReplicationFactor: o.defaultRF,
		DeletionTimeout:          o.deletionTimeout,
		RetryMin:                 200 * time.Millisecond,
		RetryMax:                 5 * time.Second,
		ProgressInterval:         500 * time.Millisecond,
		SkipNameValidation:       true,
		MaxConcurrentReconciles:  o.concurrency,
	}
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("manager: %v", err)
			}
		case <-time.After(time.Minute):
			t.Errorf("manager did not stop within a minute")
		}
	})
	return &testOperator{view: view, prov: prov, cluster: cluster, registry: reg}
}

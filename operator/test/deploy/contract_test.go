package deploy

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
	"palaver.dev/services/kafkatest"
)

// TestChartRunsTheBinaries is the chart's contract with the binaries. It
// renders the chart against a real Kafka broker (plaintext: the harness has
// no TLS listener), then runs every container the chart renders as a
// process of the binary its command names, with the rendered arguments and
// environment and the rendered Secrets as mounted files, and checks that it
// becomes live and ready on the ports the chart declares. The operator runs
// against the envtest API server as the chart's ServiceAccount, bound by
// the chart's RBAC, and provisions a ChatRoom; a little load goes through
// the gateway; and every Palaver and controller-runtime metric the
// dashboards query is then exported by one of the processes. A real
// Prometheus scrapes the processes throughout, as the chart's
// ServiceMonitors would have it, and every dashboard panel's query returns
// data from it (the subtest DashboardsReturnData, requireDashboardData).
func TestChartRunsTheBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries against a real Kafka broker: not in -short mode")
	}
	bins := buildBinaries(t, "gateway", "operator", "history", "presence", "palaver")
	bootstrap := kafkaBootstrap(t)
	ns := newNamespace(t)

	_, objs := render(t, ns, fmt.Sprintf(`
kafka: {bootstrap: %q, tls: {enabled: false}, sasl: {mechanism: ""}}
operator: {replicas: 1, defaultReplicationFactor: 1}
gateway: {autoscaling: {enabled: false}, replicas: 1}
history: {shards: 2, copies: 1}
presence: {replicas: 1, topics: {partitions: 4, replicationFactor: 1}}
`, bootstrap))

	procs := runChart(t, bins, ns, objs, nil)
	require.Contains(t, procs, "gateway")
	require.Contains(t, procs, "operator")
	require.Contains(t, procs, "palaver-history-0")
	require.Contains(t, procs, "palaver-history-1")
	require.Contains(t, procs, "presence")
	for _, p := range procs {
		p.waitLive(t)
	}
	// A real Prometheus scrapes them from here on, as the chart's
	// ServiceMonitors say, for the dashboards' queries at the end.
	prom := startPrometheus(t, ns, objs, procs)
	secrets := renderedSecrets(t, objs)
	room := chatThroughChart(t, bins, ns, procs, secrets)
	// History's latency series of a query kind starts with its first
	// query, which rate() cannot see: the dashboard's panel shows the
	// searches after the one Prometheus first scraped.
	prom.waitSeries(t, `palaver_history_query_duration_seconds_count{kind="search"}`)
	require.NoError(t, searchThroughGateway(t, "http://"+procs["gateway"].ports["http"], room.Name,
		hs256Token(t, secrets["palaver-gateway-auth"]["hs256-secret"], "contract")), "a second search")

	// What the dashboards query is exported.
	exported := map[string]bool{}
	for _, p := range procs {
		for _, n := range p.metricNames(t) {
			exported[n] = true
		}
	}
	for file, names := range dashboardMetrics(t) {
		for _, n := range names {
			if strings.HasPrefix(n, "palaver_") || strings.HasPrefix(n, "controller_runtime_") {
				require.True(t, exported[n], "%s queries %s, which no Palaver binary exports", file, n)
			}
		}
	}

	// And every panel of the dashboards shows data from them.
	t.Run("DashboardsReturnData", func(t *testing.T) { prom.requireDashboardData(t, ns) })
}

// chatThroughChart uses what runChart started as people would, so that
// every component does its work on Kafka: the operator provisions a room
// in namespace ns (its topic and its registry entry), a little load goes
// through the gateway (every message delivered once to every member), the
// gateway refuses an empty message, history serves a search through the
// gateway, and presence counts the members. It returns the room's
// ChatRoom, Ready.
func chatThroughChart(t *testing.T, bins map[string]string, ns string, procs map[string]*process,
	secrets map[string]map[string][]byte) *chatv1alpha1.ChatRoom {
	t.Helper()
	procs["operator"].waitReady(t, true)

	// The operator provisions a room, and with it the room registry: the
	// gateway is ready once it has read the registry (on a new cluster,
	// after the first ChatRoom). Then a little load goes through it, every
	// message delivered once to every member.
	roomName := fmt.Sprintf("contract-%d", time.Now().UnixNano()%1e9)
	cr := &chatv1alpha1.ChatRoom{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: roomName}}
	require.NoError(t, k8sClient.Create(t.Context(), cr))
	waitFor(t, 2*time.Minute, "ChatRoom "+roomName+" Ready", func() error {
		if err := k8sClient.Get(t.Context(), client.ObjectKeyFromObject(cr), cr); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(cr.Status.Conditions, chatv1alpha1.ConditionReady) {
			return fmt.Errorf("conditions %+v", cr.Status.Conditions)
		}
		return nil
	})
	procs["gateway"].waitReady(t, true)
	// Presence, like the gateway, is ready once it has read the registry;
	// it has created its topics and joined its consumer group by then, so
	// the members' joins below are counted.
	procs["presence"].waitReady(t, true)
	for name, p := range procs {
		if strings.HasPrefix(name, "palaver-history-") {
			p.waitReady(t, true)
		}
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(hs256Token(t, secrets["palaver-gateway-auth"]["hs256-secret"], "contract")), 0o600))
	gatewayURL := "http://" + procs["gateway"].ports["http"]
	waitFor(t, 2*time.Minute, "palaver load through the gateway", func() error {
		_, err := tryCommand(t, nil, bins["palaver"], "load", "--url", gatewayURL, "--token-file", tokenFile,
			"--room", roomName, "--members", "2", "--rate", "10", "--count", "20", "--warmup", "1s", "--drain", "10s")
		return err
	})

	// And one send the gateway refuses (empty text), which the dashboard
	// of rejected commands shows.
	token, err := os.ReadFile(tokenFile)
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, gatewayURL+"/v1/rooms/"+roomName+"/messages",
		strings.NewReader(`{"id":"contract-empty","text":""}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+string(token))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "an empty message is refused")

	// Search exists only in history: the gateway reaches the replica of
	// the room's shard through the URLs the chart gives it.
	waitFor(t, time.Minute, "search through the gateway", func() error {
		return searchThroughGateway(t, gatewayURL, roomName, string(token))
	})

	// The members' joins went through presence: the service counted them
	// in the room and published its state, which the gateway read back and
	// sent to the members.
	for proc, name := range map[string]string{
		"presence": "palaver_presence_online_users",
		"gateway":  "palaver_gateway_presence_frames_total",
	} {
		waitFor(t, time.Minute, proc+" exports "+name, func() error {
			if !slices.Contains(procs[proc].metricNames(t), name) {
				return errors.New("not yet")
			}
			return nil
		})
	}
	return cr
}

// searchThroughGateway searches room through the gateway at gatewayURL.
func searchThroughGateway(t *testing.T, gatewayURL, room, token string) error {
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, gatewayURL+"/v1/rooms/"+room+"/search?q=a", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	return nil
}

// TestChartRunsWithStrimziCredentials runs the binaries as the chart's
// defaults render them: TLS with Strimzi's cluster CA and SCRAM-SHA-512
// with each KafkaUser's password, from the mounted Secrets (made up here,
// as Strimzi would make them). The test broker has no TLS listener, so the
// processes cannot become ready; they must start, read every credential
// file the chart points them at, and answer their probes.
func TestChartRunsWithStrimziCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries: not in -short mode")
	}
	bins := buildBinaries(t, "gateway", "operator", "history", "presence")
	ns := newNamespace(t)
	_, objs := render(t, ns, "history: {copies: 1}")
	procs := runChart(t, bins, ns, objs, map[string]map[string][]byte{
		"palaver-cluster-ca-cert": {"ca.crt": selfSignedCA(t)},
		"palaver-gateway":         {"password": []byte("gateway-password")},
		"palaver-operator":        {"password": []byte("operator-password")},
		"palaver-history":         {"password": []byte("history-password")},
		"palaver-presence":        {"password": []byte("presence-password")},
	})
	require.Len(t, procs, 4)
	for _, p := range procs {
		require.Equal(t, "true", p.env["PALAVER_KAFKA_TLS"], p.name)
		require.Equal(t, "SCRAM-SHA-512", p.env["PALAVER_KAFKA_SASL_MECHANISM"], p.name)
		p.waitLive(t)
		p.waitReady(t, false)
	}
}

// runChart applies the chart's ServiceAccounts and RBAC to the API server,
// then runs every container of the rendered StatefulSets' pods, then of
// the rendered Deployments (see startContainer). Secrets are the rendered
// ones plus extra (those Strimzi would make). The operator authenticates
// as its ServiceAccount. A StatefulSet pod runs under its pod name as host
// name, and its ports are known to the Deployments' containers under the
// pod's DNS name through the headless Service; its processes are keyed by
// pod name, the Deployments' by container name.
func runChart(t *testing.T, bins map[string]string, ns string, objs []*unstructured.Unstructured,
	extra map[string]map[string][]byte) map[string]*process {
	t.Helper()
	var rbac []string
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			b, err := json.Marshal(o.Object)
			require.NoError(t, err)
			rbac = append(rbac, string(b))
		}
	}
	kubectl(t, []byte(strings.Join(rbac, "\n")), "apply", "-f", "-")
	saKubeconfig, err := writeKubeconfig(t.TempDir(), envtest.User{
		Name:   "system:serviceaccount:" + ns + ":palaver-operator",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	})
	require.NoError(t, err)

	secrets := renderedSecrets(t, objs)
	maps.Copy(secrets, extra)
	procs := map[string]*process{}
	dns := map[string]string{} // "pod.service.ns.svc:port" -> the loopback address it moved to
	for _, o := range kinds(objs, "StatefulSet") {
		var set appsv1.StatefulSet
		require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &set))
		require.NotNil(t, set.Spec.Replicas)
		for k := range int(*set.Spec.Replicas) {
			pod := fmt.Sprintf("%s-%d", set.Name, k)
			claims := map[string]bool{}
			for _, c := range set.Spec.VolumeClaimTemplates {
				claims[c.Name] = true
			}
			for _, c := range set.Spec.Template.Spec.Containers {
				p := startContainer(t, bins, ns, set.Spec.Template.Spec, c, secrets, nil,
					podSetup{name: pod, labels: set.Spec.Template.Labels, hostname: pod, claims: claims})
				procs[pod] = p
				for _, port := range c.Ports {
					dns[fmt.Sprintf("%s.%s.%s.svc:%d", pod, set.Spec.ServiceName, ns, port.ContainerPort)] = p.ports[port.Name]
				}
			}
		}
	}
	for _, d := range kinds(objs, "Deployment") {
		var pod corev1.PodTemplateSpec
		spec, _, _ := unstructured.NestedMap(d.Object, "spec", "template")
		require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(spec, &pod))
		for _, c := range pod.Spec.Containers {
			env := map[string]string{}
			if c.Name == "operator" {
				env["KUBECONFIG"] = saKubeconfig
			}
			// A Deployment's pod is named after it (with a made-up suffix).
			procs[c.Name] = startContainer(t, bins, ns, pod.Spec, c, secrets, env,
				podSetup{name: d.GetName() + "-0", labels: pod.Labels, dns: dns})
		}
	}
	return procs
}

// renderedSecrets returns the data of the Secrets the chart renders.
func renderedSecrets(t *testing.T, objs []*unstructured.Unstructured) map[string]map[string][]byte {
	t.Helper()
	secrets := map[string]map[string][]byte{}
	for _, o := range kinds(objs, "Secret") {
		var s corev1.Secret
		require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &s))
		secrets[s.Name] = s.Data
	}
	return secrets
}

// selfSignedCA returns a CA certificate in PEM, like Strimzi's cluster CA.
func selfSignedCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cluster-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// buildBinaries builds the named binaries (the base names of the chart's
// container commands) from the repository.
func buildBinaries(t *testing.T, names ...string) map[string]string {
	t.Helper()
	pkgs := map[string]string{"operator": "./operator/cmd"}
	dir := t.TempDir()
	out := map[string]string{}
	for _, n := range names {
		pkg, ok := pkgs[n]
		if !ok {
			pkg = "./services/cmd/" + n
		}
		out[n] = filepath.Join(dir, n)
		cmd := exec.CommandContext(t.Context(), "go", "build", "-o", out[n], pkg)
		cmd.Dir = repoRoot
		b, err := cmd.CombinedOutput()
		require.NoError(t, err, "go build %s: %s", pkg, b)
	}
	return out
}

// kafkaBootstrap returns a running broker: $PALAVER_KAFKA_BOOTSTRAP, or a
// single node started for this test.
func kafkaBootstrap(t *testing.T) string {
	t.Helper()
	if bs := os.Getenv(kafkatest.EnvBootstrap); bs != "" {
		return bs
	}
	return startKafka(t, kafkatest.Options{Nodes: 1}).Bootstrap()
}

// process is a container of the chart run as a local process.
type process struct {
	name      string
	container corev1.Container
	pod       string            // the name of the pod it runs in
	labels    map[string]string // that pod's labels
	ports     map[string]string // container port name -> the loopback address it was moved to
	env       map[string]string // the environment it runs with (rendered, then moved)
	log       string
	exited    chan struct{}
	waitErr   error
	cmd       *exec.Cmd
	restart   func(*testing.T) *process // stops it and runs the container again, as a new pod would
}

// podSetup is what a pod has besides its containers' specs.
type podSetup struct {
	name     string            // the pod's name
	labels   map[string]string // the pod's labels, which Services select
	hostname string            // the host name (a StatefulSet pod's name); empty keeps the machine's
	claims   map[string]bool   // volume claim templates (a StatefulSet's), mounted as empty directories
	dns      map[string]string // "host:port" -> the loopback address that serves it
}

// startContainer runs container c of pod as a process. Its command's base
// name picks the binary; declared ports move to free loopback ports (as a
// pod's network namespace would make them free); mount paths move under a
// temporary root, with the rendered Secrets' items written there, and
// emptyDir volumes and volume claims as empty directories; host:port
// names of setup.dns in the environment move to their loopback addresses.
// With setup.hostname, the process runs in a UTS namespace of its own
// under that host name (unshare, as an unprivileged user).
func startContainer(t *testing.T, bins map[string]string, ns string, pod corev1.PodSpec, c corev1.Container,
	secrets map[string]map[string][]byte, extra map[string]string, setup podSetup) *process {
	t.Helper()
	require.NotEmpty(t, c.Command, "container %s names its binary", c.Name)
	bin, ok := bins[filepath.Base(c.Command[0])]
	require.True(t, ok, "container %s runs %s, which is not a Palaver binary", c.Name, c.Command[0])
	p := &process{name: c.Name, container: c, ports: map[string]string{}, pod: setup.name, labels: setup.labels}
	p.restart = func(t *testing.T) *process {
		t.Helper()
		p.stop()
		return startContainer(t, bins, ns, pod, c, secrets, extra, setup)
	}

	moved := map[string]string{} // ":8080" -> "127.0.0.1:NNNN"
	for _, port := range c.Ports {
		addr := freeAddr(t)
		p.ports[port.Name] = addr
		moved[":"+strconv.Itoa(int(port.ContainerPort))] = addr
	}
	root := t.TempDir()
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	var mounts []string
	for _, m := range c.VolumeMounts {
		dir := filepath.Join(root, m.MountPath)
		require.NoError(t, os.MkdirAll(dir, 0o700))
		mounts = append(mounts, m.MountPath)
		if setup.claims[m.Name] {
			continue
		}
		v, ok := volumes[m.Name]
		require.True(t, ok, "container %s mounts undeclared volume %s", c.Name, m.Name)
		if v.EmptyDir != nil {
			continue
		}
		require.NotNil(t, v.Secret, "volume %s: only Secret, emptyDir and claimed volumes are expected", v.Name)
		data, ok := secrets[v.Secret.SecretName]
		require.True(t, ok, "volume %s: Secret %s is not rendered by the chart", v.Name, v.Secret.SecretName)
		for _, item := range v.Secret.Items {
			b, ok := data[item.Key]
			require.True(t, ok, "Secret %s has no key %s", v.Secret.SecretName, item.Key)
			require.NoError(t, os.WriteFile(filepath.Join(dir, item.Path), b, 0o600))
		}
	}
	// rewrite applies the moves to a value: a listen address ":port", a
	// path under a mount, and the DNS names of other pods' ports.
	rewrite := func(s string) string {
		if addr, ok := moved[s]; ok {
			return addr
		}
		for name, addr := range setup.dns {
			s = strings.ReplaceAll(s, "//"+name, "//"+addr)
		}
		for _, m := range mounts {
			if s == m || strings.HasPrefix(s, m+"/") {
				return filepath.Join(root, s)
			}
		}
		return s
	}

	env := map[string]string{}
	var names []string
	for _, e := range c.Env {
		var v string
		switch {
		case e.ValueFrom == nil:
			v = expand(e.Value, env)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			v = ns
		case e.ValueFrom.ResourceFieldRef != nil:
			v = resourceValue(t, c, e.ValueFrom.ResourceFieldRef)
		default:
			t.Fatalf("container %s: env %s: a source the test does not know", c.Name, e.Name)
		}
		env[e.Name] = rewrite(v)
		names = append(names, e.Name)
	}
	p.env = env
	var args []string
	for _, a := range slices.Concat(c.Command[1:], c.Args) {
		a = expand(a, env)
		if flag, value, ok := strings.Cut(a, "="); ok && strings.HasPrefix(flag, "--") {
			a = flag + "=" + rewrite(value)
		}
		args = append(args, a)
	}

	// Only the rendered environment (and what the API server connection
	// needs), not the test's: a setting the chart forgot must show.
	environ := []string{"HOME=" + root, "PATH=" + os.Getenv("PATH")}
	for _, n := range names {
		environ = append(environ, n+"="+env[n])
	}
	for k, v := range extra {
		environ = append(environ, k+"="+v)
	}
	cmd := exec.Command(bin, args...)
	if setup.hostname != "" {
		cmd = exec.Command("unshare", slices.Concat([]string{"--user", "--map-root-user", "--uts", "--",
			"sh", "-c", `hostname "$0" && exec "$@"`, setup.hostname, bin}, args)...)
	}
	cmd.Env, cmd.Dir = environ, root
	p.startProcess(t, cmd, filepath.Join(root, c.Name+".log"))
	t.Logf("started %s: %s %s", c.Name, filepath.Base(bin), strings.Join(args, " "))
	return p
}

// startProcess starts cmd as p, its output going to logPath, and stops it
// when the test ends, logging the log's tail when the test failed.
func (p *process) startProcess(t *testing.T, cmd *exec.Cmd, logPath string) {
	t.Helper()
	p.log, p.exited = logPath, make(chan struct{})
	logFile, err := os.Create(p.log)
	require.NoError(t, err)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	require.NoError(t, cmd.Start(), "start %s", p.name)
	p.cmd = cmd
	go func() {
		p.waitErr = cmd.Wait()
		_ = logFile.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("%s's log:\n%s", p.name, tail(string(b), 60))
		}
	})
}

// stop interrupts the process, as the kubelet's SIGTERM would, and waits
// for it to exit (killing it after 30 s).
func (p *process) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// logged counts the lines of the process's log whose message is msg.
func (p *process) logged(msg string) int {
	b, _ := os.ReadFile(p.log)
	n := 0
	for line := range strings.Lines(string(b)) {
		var rec struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == msg {
			n++
		}
	}
	return n
}

// waitLive waits for the container's liveness probe to answer 200 on the
// port the chart declares.
func (p *process) waitLive(t *testing.T) {
	t.Helper()
	p.waitProbe(t, "liveness", p.container.LivenessProbe, true)
}

// waitReady waits for the container's readiness probe to answer: 200 when
// ok is set, anything otherwise.
func (p *process) waitReady(t *testing.T, ok bool) {
	t.Helper()
	p.waitProbe(t, "readiness", p.container.ReadinessProbe, ok)
}

func (p *process) waitProbe(t *testing.T, kind string, probe *corev1.Probe, ok bool) {
	t.Helper()
	require.NotNil(t, probe, "%s: no %s probe", p.name, kind)
	require.NotNil(t, probe.HTTPGet, "%s: %s probe is not an HTTP GET", p.name, kind)
	addr, declared := p.ports[probe.HTTPGet.Port.String()]
	require.True(t, declared, "%s: %s probe on undeclared port %s", p.name, kind, probe.HTTPGet.Port.String())
	url := "http://" + addr + probe.HTTPGet.Path
	waitFor(t, 2*time.Minute, fmt.Sprintf("%s %s probe %s", p.name, kind, url), func() error {
		select {
		case <-p.exited:
			return fmt.Errorf("exited: %w", p.waitErr)
		default:
		}
		err := get(url, nil)
		if !ok && errors.As(err, new(*statusError)) {
			return nil // it answered
		}
		return err
	})
}

// metricNames scrapes the container's metrics port (the one its
// ServiceMonitor names) and returns the metric names it exports.
func (p *process) metricNames(t *testing.T) []string {
	t.Helper()
	addr, ok := p.ports["metrics"]
	require.True(t, ok, "%s declares no metrics port", p.name)
	var body strings.Builder
	require.NoError(t, get("http://"+addr+"/metrics", &body))
	var names []string
	sc := bufio.NewScanner(strings.NewReader(body.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names = append(names, line[:i])
		}
	}
	return names
}

func get(url string, body io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if body == nil {
		body = io.Discard
	}
	if _, err := io.Copy(body, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return &statusError{url: url, status: resp.Status}
	}
	return nil
}

// statusError is an HTTP answer other than 200 OK.
type statusError struct{ url, status string }

func (e *statusError) Error() string { return e.url + ": " + e.status }

// waitFor polls check until it succeeds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expand replaces $(VAR) with earlier variables, as the kubelet does.
func expand(s string, env map[string]string) string {
	return varRef.ReplaceAllStringFunc(s, func(m string) string {
		if v, ok := env[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// resourceValue is what the kubelet puts in a resourceFieldRef variable:
// the limit divided by the divisor, rounded up.
func resourceValue(t *testing.T, c corev1.Container, ref *corev1.ResourceFieldSelector) string {
	t.Helper()
	name, ok := strings.CutPrefix(ref.Resource, "limits.")
	require.True(t, ok, "resourceFieldRef %s", ref.Resource)
	q, ok := c.Resources.Limits[corev1.ResourceName(name)]
	require.True(t, ok, "container %s: %s refers to an unset limit", c.Name, ref.Resource)
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	return strconv.FormatInt(int64(math.Ceil(q.AsApproximateFloat64()/divisor.AsApproximateFloat64())), 10)
}

// hs256Token signs a token for sub with key, as an identity provider
// sharing the gateway's HS256 key would.
func hs256Token(t *testing.T, key []byte, sub string) string {
	t.Helper()
	require.NotEmpty(t, key, "the chart's HS256 key")
	enc := base64.RawURLEncoding
	claims, err := json.Marshal(map[string]any{"sub": sub, "name": sub, "exp": time.Now().Add(time.Hour).Unix()})
	require.NoError(t, err)
	unsigned := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(claims)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(unsigned))
	return unsigned + "." + enc.EncodeToString(mac.Sum(nil))
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// dashboardMetrics runs the dashboards' check (hack/dashboards: the
// committed JSON matches its definitions and every query parses) and
// returns the metric names each dashboard queries.
var dashboardMetricsOnce = sync.OnceValues(func() (map[string][]string, error) {
	cmd := exec.Command("go", "run", ".", "-check", filepath.Join("..", "..", "charts", "palaver", "dashboards"))
	cmd.Dir = filepath.Join(repoRoot, "hack", "dashboards")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("hack/dashboards -check: %w\n%s", err, stderr.String())
	}
	var names map[string][]string
	return names, json.Unmarshal(out, &names)
})

func dashboardMetrics(t *testing.T) map[string][]string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the dashboards' checker with Prometheus's parser: skipped in -short mode")
	}
	names, err := dashboardMetricsOnce()
	require.NoError(t, err)
	require.NotEmpty(t, names)
	return names
}

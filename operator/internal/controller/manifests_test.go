package controller

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
	"palaver.dev/services/room"
)

var samplesDir = filepath.Join("..", "..", "..", "k8s", "samples")

// TestConfigDefaultApplies renders config/default with kubectl kustomize
// and has the API server accept every object (kubectl apply
// --dry-run=server): the Deployment, RBAC and CRD are valid as shipped. It
// also applies the sample ChatRooms, which must pass the CRD's schema and
// CEL rules.
func TestConfigDefaultApplies(t *testing.T) {
	needEnvtest(t)
	kubectl := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		// make envtest builds kubectl with etcd and kube-apiserver, so this
		// is an incomplete build, not a reason to skip the check.
		t.Fatalf("no kubectl next to the envtest binaries (run `make envtest`): %v", err)
	}
	admin, err := testEnv.AddUser(envtest.User{Name: "manifests-test", Groups: []string{"system:masters"}}, nil)
	require.NoError(t, err)
	kubeconfig, err := admin.KubeConfig()
	require.NoError(t, err)
	kcPath := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, os.WriteFile(kcPath, kubeconfig, 0o600))
	run := func(stdin []byte, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), kubectl, args...)
		cmd.Stdin = bytes.NewReader(stdin)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		require.NoError(t, err, "kubectl %s: %s", strings.Join(args, " "), stderr.String())
		return string(out)
	}

	rendered := run(nil, "kustomize", filepath.Join("..", "..", "config", "default"))
	for _, kind := range []string{"Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment"} {
		require.Contains(t, rendered, "\nkind: "+kind+"\n")
	}
	// An image loaded into the nodes (kind load docker-image, as
	// docs/operator.md shows) must be used, not pulled again: Kubernetes
	// pulls a :latest image every time unless told otherwise.
	var deployments int
	for _, doc := range strings.Split(rendered, "\n---\n") {
		if !strings.Contains(doc, "\nkind: Deployment\n") {
			continue
		}
		deployments++
		var d appsv1.Deployment
		require.NoError(t, yaml.Unmarshal([]byte(doc), &d))
		for _, c := range d.Spec.Template.Spec.Containers {
			require.Equal(t, corev1.PullIfNotPresent, c.ImagePullPolicy, "container %s (%s)", c.Name, c.Image)
		}
	}
	require.Equal(t, 1, deployments)
	// Namespaced objects need their namespace to exist, which a dry run
	// does not create.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "palaver-system"}}
	require.NoError(t, client.IgnoreAlreadyExists(k8sClient.Create(t.Context(), ns)))
	out := run([]byte(rendered), "--kubeconfig", kcPath, "apply", "--dry-run=server", "-f", "-")
	t.Logf("kubectl apply --dry-run=server:\n%s", out)
	require.Contains(t, out, "deployment.apps/palaver-operator-controller-manager created (server dry run)")

	sampleNS := newNamespace(t)
	out = run(nil, "--kubeconfig", kcPath, "apply", "--dry-run=server", "-n", sampleNS, "-f", samplesDir)
	require.Contains(t, out, "chatroom.chat.palaver.dev/lobby created (server dry run)")

	// The names docs/operator.md uses.
	cache := t.TempDir()
	for _, resource := range []string{"rooms", "room", "chatrooms", "palaver"} {
		run(nil, "--kubeconfig", kcPath, "--cache-dir", cache, "get", resource, "-A")
	}
}

// TestSamplesMatchDevMode decodes every k8s/samples manifest with the CRD's
// types (the operator's conversion to room.Spec) and with
// room.ParseManifests (dev mode's reader), and requires the same room.Spec:
// as written, and after the defaults (the API server's, from the CRD, then
// room.Spec.WithDefaults).
func TestSamplesMatchDevMode(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(samplesDir, "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	ns := newNamespace(t)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			require.NoError(t, err)
			dev, err := room.ParseManifests(data)
			require.NoError(t, err)
			require.Len(t, dev, 1, "one ChatRoom per sample file")

			var cr chatv1alpha1.ChatRoom
			require.NoError(t, yaml.UnmarshalStrict(data, &cr), "the sample has a field the CRD does not")
			op, err := roomSpec(&cr)
			require.NoError(t, err)
			require.Equal(t, dev[0], op, "as written")

			// The API server's defaults, then room's.
			cr.Namespace = ns
			require.NoError(t, k8sClient.Create(t.Context(), &cr, client.DryRunAll))
			defaulted, err := desiredSpec(&cr, 3)
			require.NoError(t, err)
			d := dev[0]
			d.Namespace = ns
			require.Equal(t, d.WithDefaults(3), defaulted, "defaulted")
		})
	}
}

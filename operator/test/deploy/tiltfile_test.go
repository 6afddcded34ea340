package deploy

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.starlark.net/starlark"
	"go.starlark.net/syntax"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// TestTiltfile evaluates the Tiltfile as Starlark, offline, with Tilt's
// builtins replaced by recorders (its helm() renders the chart for real),
// and checks what it declares: every file it names exists, every image it
// builds is one the chart runs and the Dockerfile can build, every
// resource it names or depends on exists, the dependencies have no cycle,
// every resource is labelled, the Dockerfile's default target is the
// production image, and each image's live update fits the containers that
// run it (requireLiveUpdate).
func TestTiltfile(t *testing.T) {
	tf := newTiltfake(t)
	src, err := os.ReadFile(filepath.Join(repoRoot, "Tiltfile"))
	require.NoError(t, err)
	thread := &starlark.Thread{Name: "Tiltfile", Load: tf.load}
	// The dialect Tilt accepts: loops and ifs at the top level, while,
	// sets, reassigned globals, recursion.
	opts := &syntax.FileOptions{TopLevelControl: true, While: true, Set: true, GlobalReassign: true, Recursion: true}
	_, err = starlark.ExecFileOptions(opts, thread, "Tiltfile", src, tf.builtins())
	require.NoError(t, err)

	// Every resource Tilt would show: workloads, renamed object groups,
	// local resources, Helm releases and repositories.
	for _, o := range tf.objects {
		switch o.GetKind() {
		case "Deployment", "StatefulSet", "DaemonSet", "Job":
			tf.declare(t, o.GetName(), nil)
		}
	}
	for _, r := range tf.k8sResources {
		name := r.name
		if r.newName != "" {
			tf.declare(t, r.newName, r.labels)
			name = r.newName
		} else {
			_, ok := tf.resources[name]
			require.True(t, ok, "k8s_resource(%q) names no workload the Tiltfile deploys", name)
			tf.resources[name] = r.labels
		}
		for _, sel := range r.objects {
			require.True(t, tf.hasObject(sel), "k8s_resource %s: no object %q", name, sel)
		}
		tf.deps[name] = append(tf.deps[name], r.deps...)
	}
	for name, labels := range tf.resources {
		require.NotEmpty(t, labels, "resource %s has no label", name)
	}
	for name, deps := range tf.deps {
		for _, d := range deps {
			_, ok := tf.resources[d]
			require.True(t, ok, "resource %s depends on unknown resource %s", name, d)
		}
	}
	requireAcyclic(t, tf.deps)

	// Images: each one built is run by the chart, and each one the chart
	// runs from palaver/ is built.
	running := map[string]bool{}
	for _, o := range tf.objects {
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, c := range containers {
			ref, _, _ := strings.Cut(c.(map[string]any)["image"].(string), ":")
			if strings.HasPrefix(ref, "palaver/") {
				running[ref] = true
			}
		}
	}
	require.NotEmpty(t, running)
	require.Equal(t, slices.Sorted(maps.Keys(running)), slices.Sorted(maps.Keys(tf.images)),
		"images the Tiltfile builds against those the chart runs")
	dockerfile, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	require.NoError(t, err)
	for ref, img := range tf.images {
		require.Regexp(t, `(?m)^FROM \S+ AS `+regexp.QuoteMeta(img.target)+`$`, string(dockerfile), "%s: Dockerfile target", ref)
		for arg := range img.buildArgs {
			require.Regexp(t, `(?m)^ARG `+arg+`\b`, string(dockerfile), "%s: build arg %s", ref, arg)
		}
		for _, only := range img.only {
			if _, err := os.Stat(filepath.Join(repoRoot, only)); err == nil && !strings.HasPrefix(only, "bin/") {
				continue // a file of the repository
			}
			built := false
			for _, cmd := range tf.commands {
				built = built || strings.Contains(cmd, "-o "+only+" ")
			}
			require.True(t, built, "%s: no local_resource builds %s", ref, only)
		}
	}
	require.NotEmpty(t, tf.namespaces)

	// The default (last) target of the Dockerfile is the production image.
	froms := regexp.MustCompile(`(?m)^FROM .*$`).FindAllString(string(dockerfile), -1)
	require.Equal(t, "FROM gcr.io/distroless/static:nonroot", froms[len(froms)-1], "the Dockerfile's default target")
	for ref, img := range tf.images {
		requireLiveUpdate(t, ref, img, string(dockerfile), tf.objects)
	}
}

// requireLiveUpdate checks an image's live update against the Dockerfile
// and the containers that run it: the entrypoint is the supervisor the
// image's target copies in (from a file the build context holds) running
// the container's own command; every sync goes into the directory the
// supervisor runs synced builds from, which is an emptyDir mounted in
// every container of the image, whose root filesystem stays read-only; a
// run step follows the syncs (the supervisor's restart).
func requireLiveUpdate(t *testing.T, ref string, img image, dockerfile string, objs []*unstructured.Unstructured) {
	t.Helper()
	require.NotEmpty(t, img.liveUpdate, "%s: no live update", ref)
	require.Len(t, img.entrypoint, 4, "%s: entrypoint: shell, supervisor, live directory, binary", ref)
	shell, supervisor, liveDir, binary := img.entrypoint[0], img.entrypoint[1], img.entrypoint[2], img.entrypoint[3]

	// The target's stage copies the supervisor in.
	from := regexp.MustCompile(`(?m)^FROM (\S+) AS ` + regexp.QuoteMeta(img.target) + `\n`).FindStringSubmatchIndex(dockerfile)
	require.NotNil(t, from, "%s: no target %s", ref, img.target)
	base, stage := dockerfile[from[2]:from[3]], dockerfile[from[1]:]
	if next := strings.Index(stage, "\nFROM "); next >= 0 {
		stage = stage[:next]
	}
	require.Contains(t, base, ":debug", "%s: the %s target's base has the shell (%s) and tar Tilt runs", ref, img.target, shell)
	m := regexp.MustCompile(`(?m)^COPY (\S+) ` + regexp.QuoteMeta(supervisor) + `$`).FindStringSubmatch(stage)
	require.NotNil(t, m, "%s: the %s target copies nothing to %s", ref, img.target, supervisor)
	require.Contains(t, img.only, m[1], "%s: %s is not in the build context", ref, m[1])
	_, err := os.Stat(filepath.Join(repoRoot, m[1]))
	require.NoError(t, err)

	synced := 0
	for i, step := range img.liveUpdate {
		switch step.kind {
		case "sync":
			require.Zero(t, i-synced, "%s: syncs come first", ref)
			require.Contains(t, img.only, step.args[0], "%s: %s syncs a file the build does not make", ref, step)
			require.Equal(t, liveDir+"/"+filepath.Base(binary), step.args[1], "%s: %s", ref, step)
			synced++
		case "run":
			require.NotEmpty(t, step.args[0], "%s", ref)
		}
	}
	require.Positive(t, synced, "%s: no sync", ref)
	require.Equal(t, "run", img.liveUpdate[len(img.liveUpdate)-1].kind, "%s: the last step restarts the process", ref)

	containers := 0
	for _, o := range objs {
		var pod corev1.PodTemplateSpec
		spec, ok, _ := unstructured.NestedMap(o.Object, "spec", "template")
		if !ok {
			continue
		}
		require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(spec, &pod))
		for _, c := range pod.Spec.Containers {
			if r, _, _ := strings.Cut(c.Image, ":"); r != ref {
				continue
			}
			containers++
			require.Equal(t, []string{binary}, c.Command, "%s: the supervisor runs the container's command", c.Name)
			require.NotNil(t, c.SecurityContext)
			require.True(t, *c.SecurityContext.ReadOnlyRootFilesystem, "%s: read-only root filesystem", c.Name)
			i := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == liveDir })
			require.GreaterOrEqual(t, i, 0, "%s: nothing mounted at %s", c.Name, liveDir)
			j := slices.IndexFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == c.VolumeMounts[i].Name })
			require.GreaterOrEqual(t, j, 0, "%s", c.Name)
			require.NotNil(t, pod.Spec.Volumes[j].EmptyDir, "%s: %s is an emptyDir", c.Name, liveDir)
		}
	}
	require.Positive(t, containers, "%s: no container runs it", ref)
}

// tiltfake records what a Tiltfile declares.
type tiltfake struct {
	t            *testing.T
	resources    map[string][]string // resource -> labels
	deps         map[string][]string
	objects      []*unstructured.Unstructured
	k8sResources []k8sResource
	images       map[string]image
	commands     []string
	namespaces   []string
}

type k8sResource struct {
	name, newName string
	objects, deps []string
	labels        []string
}

type image struct {
	target     string
	buildArgs  map[string]string
	only       []string
	entrypoint []string
	liveUpdate []liveUpdateStep
}

// liveUpdateStep is what Tilt's sync(local, remote) and run(cmd) return.
type liveUpdateStep struct {
	kind string   // "sync" or "run"
	args []string // sync: local and remote path; run: the command
}

func (s liveUpdateStep) String() string        { return s.kind + "(" + strings.Join(s.args, ", ") + ")" }
func (s liveUpdateStep) Type() string          { return "live_update_" + s.kind + "_step" }
func (s liveUpdateStep) Freeze()               {}
func (s liveUpdateStep) Truth() starlark.Bool  { return starlark.True }
func (s liveUpdateStep) Hash() (uint32, error) { return 0, fmt.Errorf("unhashable: %s", s.Type()) }

func newTiltfake(t *testing.T) *tiltfake {
	return &tiltfake{t: t, resources: map[string][]string{}, deps: map[string][]string{}, images: map[string]image{}}
}

func (tf *tiltfake) declare(t *testing.T, name string, labels []string) {
	t.Helper()
	_, dup := tf.resources[name]
	require.False(t, dup, "resource %s declared twice", name)
	tf.resources[name] = labels
}

// exists fails the test unless path (relative to the repository) exists.
func (tf *tiltfake) exists(path string) {
	tf.t.Helper()
	_, err := os.Stat(filepath.Join(repoRoot, path))
	require.NoError(tf.t, err, "the Tiltfile names %s", path)
}

func (tf *tiltfake) hasObject(selector string) bool {
	parts := strings.Split(selector, ":")
	for _, o := range tf.objects {
		if o.GetName() == parts[0] && (len(parts) < 2 || strings.EqualFold(o.GetKind(), parts[1])) {
			return true
		}
	}
	return false
}

func (tf *tiltfake) builtins() starlark.StringDict {
	fn := builtin
	none := func(name string) *starlark.Builtin {
		return fn(name, func(starlark.Tuple, map[string]starlark.Value) (starlark.Value, error) { return starlark.None, nil })
	}
	return starlark.StringDict{
		"allow_k8s_contexts": none("allow_k8s_contexts"),
		"update_settings":    none("update_settings"),
		"link": fn("link", func(args starlark.Tuple, _ map[string]starlark.Value) (starlark.Value, error) {
			return args[0], nil
		}),
		"read_yaml_stream": fn("read_yaml_stream", func(args starlark.Tuple, _ map[string]starlark.Value) (starlark.Value, error) {
			path := str(args, nil, 0, "")
			tf.exists(path)
			b, err := os.ReadFile(filepath.Join(repoRoot, path))
			if err != nil {
				return nil, err
			}
			var list []starlark.Value
			for _, o := range decodeObjects(tf.t, string(b)) {
				list = append(list, toStarlark(o.Object))
			}
			return starlark.NewList(list), nil
		}),
		"encode_yaml_stream": fn("encode_yaml_stream", func(args starlark.Tuple, _ map[string]starlark.Value) (starlark.Value, error) {
			var docs []string
			iter := args[0].(starlark.Iterable).Iterate()
			defer iter.Done()
			var v starlark.Value
			for iter.Next(&v) {
				b, err := yaml.Marshal(fromStarlark(v))
				if err != nil {
					return nil, err
				}
				docs = append(docs, string(b))
			}
			return starlark.String(strings.Join(docs, "---\n")), nil
		}),
		"helm": fn("helm", func(args starlark.Tuple, kw map[string]starlark.Value) (starlark.Value, error) {
			chart := str(args, kw, 0, "")
			tf.exists(chart)
			cmd := []string{"template", str(nil, kw, -1, "name"), filepath.Join(repoRoot, chart), "--include-crds",
				"--namespace", str(nil, kw, -1, "namespace")}
			for _, v := range strs(kw["values"]) {
				tf.exists(v)
				cmd = append(cmd, "--values", filepath.Join(repoRoot, v))
			}
			for _, v := range strs(kw["set"]) {
				cmd = append(cmd, "--set", v)
			}
			return starlark.String(helm(tf.t, cmd...)), nil
		}),
		"k8s_yaml": fn("k8s_yaml", func(args starlark.Tuple, _ map[string]starlark.Value) (starlark.Value, error) {
			tf.objects = append(tf.objects, decodeObjects(tf.t, string(args[0].(starlark.String)))...)
			return starlark.None, nil
		}),
		"k8s_resource": fn("k8s_resource", func(args starlark.Tuple, kw map[string]starlark.Value) (starlark.Value, error) {
			tf.k8sResources = append(tf.k8sResources, k8sResource{
				name: str(args, kw, 0, "workload"), newName: str(nil, kw, -1, "new_name"),
				objects: strs(kw["objects"]), deps: strs(kw["resource_deps"]), labels: strs(kw["labels"]),
			})
			return starlark.None, nil
		}),
		"local_resource": fn("local_resource", func(args starlark.Tuple, kw map[string]starlark.Value) (starlark.Value, error) {
			name := str(args, kw, 0, "name")
			tf.declare(tf.t, name, strs(kw["labels"]))
			tf.deps[name] = strs(kw["resource_deps"])
			for _, d := range strs(kw["deps"]) {
				tf.exists(d)
			}
			for _, key := range []string{"cmd", "serve_cmd"} {
				cmd := str(args, kw, map[string]int{"cmd": 1, "serve_cmd": -1}[key], key)
				tf.commands = append(tf.commands, cmd)
				// Files the command names.
				for _, m := range regexp.MustCompile(`(?:^|\s)(\./[\w./-]+|k8s/[\w./-]+)`).FindAllStringSubmatch(cmd, -1) {
					tf.exists(m[1])
				}
			}
			return starlark.None, nil
		}),
		"sync": fn("sync", func(args starlark.Tuple, kw map[string]starlark.Value) (starlark.Value, error) {
			return liveUpdateStep{kind: "sync", args: []string{str(args, kw, 0, "local_path"), str(args, kw, 1, "remote_path")}}, nil
		}),
		"run": fn("run", func(args starlark.Tuple, kw map[string]starlark.Value) (starlark.Value, error) {
			return liveUpdateStep{kind: "run", args: []string{str(args, kw, 0, "cmd")}}, nil
		}),
		"docker_build": fn("docker_build", func(args starlark.Tuple, kw map[string]starlark.Value) (starlark.Value, error) {
			ref := str(args, kw, 0, "ref")
			tf.exists(str(args, kw, 1, "context"))
			tf.exists(str(nil, kw, -1, "dockerfile"))
			img := image{target: str(nil, kw, -1, "target"), buildArgs: map[string]string{}, only: strs(kw["only"]),
				entrypoint: strs(kw["entrypoint"])}
			if steps, ok := kw["live_update"].(*starlark.List); ok {
				for i := range steps.Len() {
					step, ok := steps.Index(i).(liveUpdateStep)
					if !ok {
						return nil, fmt.Errorf("%s: live_update step %v is not a sync or run step", ref, steps.Index(i))
					}
					img.liveUpdate = append(img.liveUpdate, step)
				}
			}
			if d, ok := kw["build_args"].(*starlark.Dict); ok {
				for _, k := range d.Keys() {
					v, _, _ := d.Get(k)
					img.buildArgs[string(k.(starlark.String))] = string(v.(starlark.String))
				}
			}
			tf.images[ref] = img
			return starlark.None, nil
		}),
	}
}

// load serves the Tilt extensions the Tiltfile uses.
func (tf *tiltfake) load(_ *starlark.Thread, module string) (starlark.StringDict, error) {
	kwfn := func(name string, f func(args starlark.Tuple, kw map[string]starlark.Value)) *starlark.Builtin {
		return builtin(name, func(args starlark.Tuple, kw map[string]starlark.Value) (starlark.Value, error) {
			f(args, kw)
			return starlark.None, nil
		})
	}
	switch module {
	case "ext://helm_resource":
		return starlark.StringDict{
			"helm_repo": kwfn("helm_repo", func(args starlark.Tuple, kw map[string]starlark.Value) {
				name := str(args, kw, 0, "name")
				if rn := str(nil, kw, -1, "resource_name"); rn != "" {
					name = rn
				}
				tf.declare(tf.t, name, strs(kw["labels"]))
			}),
			"helm_resource": kwfn("helm_resource", func(args starlark.Tuple, kw map[string]starlark.Value) {
				name := str(args, kw, 0, "name")
				tf.declare(tf.t, name, strs(kw["labels"]))
				tf.deps[name] = strs(kw["resource_deps"])
				for _, d := range strs(kw["deps"]) {
					tf.exists(d)
				}
				for _, f := range strs(kw["flags"]) {
					if v, ok := strings.CutPrefix(f, "--values="); ok {
						tf.exists(v)
					}
				}
			}),
		}, nil
	case "ext://namespace":
		return starlark.StringDict{
			"namespace_create": kwfn("namespace_create", func(args starlark.Tuple, kw map[string]starlark.Value) {
				tf.namespaces = append(tf.namespaces, str(args, kw, 0, "name"))
			}),
		}, nil
	}
	return nil, fmt.Errorf("the test knows no module %q", module)
}

// builtin makes a Starlark builtin of f, which gets the keyword
// arguments as a map.
func builtin(name string, f func(args starlark.Tuple, kw map[string]starlark.Value) (starlark.Value, error)) *starlark.Builtin {
	return starlark.NewBuiltin(name, func(_ *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		kw := map[string]starlark.Value{}
		for _, p := range kwargs {
			kw[string(p[0].(starlark.String))] = p[1]
		}
		return f(args, kw)
	})
}

// str returns positional argument i (if i >= 0 and present) or keyword
// key, as a string ("" when absent).
func str(args starlark.Tuple, kw map[string]starlark.Value, i int, key string) string {
	var v starlark.Value
	if i >= 0 && i < len(args) {
		v = args[i]
	} else if kw != nil {
		v = kw[key]
	}
	if s, ok := v.(starlark.String); ok {
		return string(s)
	}
	return ""
}

// strs returns a list of strings (or a single string as a list).
func strs(v starlark.Value) []string {
	switch v := v.(type) {
	case starlark.String:
		return []string{string(v)}
	case starlark.Iterable:
		var out []string
		iter := v.Iterate()
		defer iter.Done()
		var x starlark.Value
		for iter.Next(&x) {
			if s, ok := x.(starlark.String); ok {
				out = append(out, string(s))
			}
		}
		return out
	}
	return nil
}

func toStarlark(v any) starlark.Value {
	switch v := v.(type) {
	case map[string]any:
		d := starlark.NewDict(len(v))
		for _, k := range slices.Sorted(maps.Keys(v)) {
			_ = d.SetKey(starlark.String(k), toStarlark(v[k]))
		}
		return d
	case []any:
		l := make([]starlark.Value, len(v))
		for i, x := range v {
			l[i] = toStarlark(x)
		}
		return starlark.NewList(l)
	case string:
		return starlark.String(v)
	case bool:
		return starlark.Bool(v)
	case int64:
		return starlark.MakeInt64(v)
	case float64:
		return starlark.Float(v)
	case nil:
		return starlark.None
	}
	return starlark.String(fmt.Sprint(v))
}

func fromStarlark(v starlark.Value) any {
	switch v := v.(type) {
	case *starlark.Dict:
		m := map[string]any{}
		for _, k := range v.Keys() {
			x, _, _ := v.Get(k)
			m[string(k.(starlark.String))] = fromStarlark(x)
		}
		return m
	case *starlark.List:
		l := make([]any, v.Len())
		for i := range l {
			l[i] = fromStarlark(v.Index(i))
		}
		return l
	case starlark.String:
		return string(v)
	case starlark.Bool:
		return bool(v)
	case starlark.Int:
		i, _ := v.Int64()
		return i
	case starlark.Float:
		return float64(v)
	}
	return nil
}

// requireAcyclic fails on a dependency cycle.
func requireAcyclic(t *testing.T, deps map[string][]string) {
	t.Helper()
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(n string, path []string)
	visit = func(n string, path []string) {
		switch state[n] {
		case 1:
			t.Fatalf("dependency cycle: %s", strings.Join(append(path, n), " -> "))
		case 2:
			return
		}
		state[n] = 1
		for _, d := range deps[n] {
			visit(d, append(path, n))
		}
		state[n] = 2
	}
	for _, n := range slices.Sorted(maps.Keys(deps)) {
		visit(n, nil)
	}
}

// TestLiveUpdateSupervisor runs hack/tilt/supervise.sh (the entrypoint of
// the images `tilt up` updates live) with a stand-in binary: it runs the
// image's build with the arguments; on SIGUSR1 it stops it and runs the
// build synced into the live directory, again after the next sync; SIGTERM
// stops it and the supervisor, which exits with the binary's status, as it
// does when the binary exits by itself.
func TestLiveUpdateSupervisor(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	// A binary that says which build it is, and stops on SIGTERM.
	build := func(path, version string, status int) {
		t.Helper()
		script := fmt.Sprintf("#!/bin/sh\necho \"%[1]s started $*\" >>%[2]s\n"+
			"trap 'echo \"%[1]s stopped\" >>%[2]s; exit %[3]d' TERM\nwhile :; do sleep 0.05; done\n", version, out, status)
		require.NoError(t, os.WriteFile(path, []byte(script), 0o755))
	}
	live := filepath.Join(dir, "live")
	require.NoError(t, os.Mkdir(live, 0o777))
	image := filepath.Join(dir, "server")
	build(image, "image", 0)
	wantOut := func(want ...string) {
		t.Helper()
		waitFor(t, 30*time.Second, "output "+strings.Join(want, "; "), func() error {
			b, err := os.ReadFile(out)
			if err != nil {
				return err
			}
			if got := strings.Split(strings.TrimSpace(string(b)), "\n"); !slices.Equal(got, want) {
				return fmt.Errorf("got %q", got)
			}
			return nil
		})
	}
	start := func() (*exec.Cmd, chan error) {
		t.Helper()
		require.NoError(t, os.WriteFile(out, nil, 0o600))
		cmd := exec.Command("sh", filepath.Join(repoRoot, "hack", "tilt", "supervise.sh"), live, image, "--a", "b")
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		return cmd, done
	}
	exited := func(done chan error) error {
		t.Helper()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			t.Fatal("the supervisor did not exit")
			return nil
		}
	}

	cmd, done := start()
	wantOut("image started --a b")
	build(filepath.Join(live, "server"), "sync1", 0)
	require.NoError(t, cmd.Process.Signal(syscall.SIGUSR1))
	wantOut("image started --a b", "image stopped", "sync1 started --a b")
	build(filepath.Join(live, "server"), "sync2", 7)
	require.NoError(t, cmd.Process.Signal(syscall.SIGUSR1))
	wantOut("image started --a b", "image stopped", "sync1 started --a b", "sync1 stopped", "sync2 started --a b")
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	var exit *exec.ExitError
	require.ErrorAs(t, exited(done), &exit)
	require.Equal(t, 7, exit.ExitCode(), "the binary's status")
	wantOut("image started --a b", "image stopped", "sync1 started --a b", "sync1 stopped", "sync2 started --a b", "sync2 stopped")

	// A binary that exits by itself ends the supervisor (and the container).
	require.NoError(t, os.WriteFile(filepath.Join(live, "server"), []byte("#!/bin/sh\nexit 3\n"), 0o755))
	_, done = start()
	require.ErrorAs(t, exited(done), &exit)
	require.Equal(t, 3, exit.ExitCode())
}

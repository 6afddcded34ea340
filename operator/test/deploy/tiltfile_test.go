package deploy

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.starlark.net/starlark"
	"go.starlark.net/syntax"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// TestTiltfile evaluates the Tiltfile as Starlark, offline, with Tilt's
// builtins replaced by recorders (its helm() renders the chart for real),
// and checks what it declares: every file it names exists, every image it
// builds is one the chart runs and the Dockerfile can build, every
// resource it names or depends on exists, the dependencies have no cycle,
// and every resource is labelled.
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
			built := false
			for _, cmd := range tf.commands {
				built = built || strings.Contains(cmd, "-o "+only+" ")
			}
			require.True(t, built, "%s: no local_resource builds %s", ref, only)
		}
	}
	require.NotEmpty(t, tf.namespaces)
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
	target    string
	buildArgs map[string]string
	only      []string
}

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
		"docker_build": fn("docker_build", func(args starlark.Tuple, kw map[string]starlark.Value) (starlark.Value, error) {
			ref := str(args, kw, 0, "ref")
			tf.exists(str(args, kw, 1, "context"))
			tf.exists(str(nil, kw, -1, "dockerfile"))
			img := image{target: str(nil, kw, -1, "target"), buildArgs: map[string]string{}, only: strs(kw["only"])}
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

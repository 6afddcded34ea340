package room

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"sigs.k8s.io/yaml"

	"palaver.dev/services/kafkabus"
)

// ChatRoom manifest identity, as a cluster user applies it.
const (
	APIVersion = "chat.palaver.dev/v1alpha1"
	Kind       = "ChatRoom"
)

// manifest is the part of a ChatRoom object that provisioning reads. Its
// JSON names are the CRD's (operator/api/v1alpha1); a test in the operator
// module checks that both read the samples the same way.
type manifest struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		TopicName         string `json:"topicName"`
		Partitions        int32  `json:"partitions"`
		ReplicationFactor int16  `json:"replicationFactor"`
		MinInSyncReplicas int16  `json:"minInSyncReplicas"`
		Retention         struct {
			Time  string `json:"time"`
			Bytes int64  `json:"bytes"`
		} `json:"retention"`
		MaxMessageBytes int32  `json:"maxMessageBytes"`
		DisplayName     string `json:"displayName"`
		Description     string `json:"description"`
	} `json:"spec"`
}

// ParseManifests reads ChatRoom objects from a YAML stream of one or more
// documents. Defaults are not applied.
func ParseManifests(data []byte) ([]Spec, error) {
	var specs []Spec
	for i, doc := range bytes.Split(data, []byte("\n---")) {
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		var m manifest
		// Fields provisioning does not need (labels, status, policies) are
		// ignored; only a broken document is an error.
		if err := yaml.Unmarshal(doc, &m); err != nil {
			return nil, fmt.Errorf("room: document %d: %w", i+1, err)
		}
		if m.APIVersion != APIVersion || m.Kind != Kind {
			return nil, fmt.Errorf("%w: document %d is %s %s, want %s %s", ErrInvalidSpec, i+1, m.APIVersion, m.Kind, APIVersion, Kind)
		}
		s := Spec{
			Name: m.Metadata.Name, Namespace: m.Metadata.Namespace, Topic: m.Spec.TopicName,
			Partitions: m.Spec.Partitions, ReplicationFactor: m.Spec.ReplicationFactor,
			MinInSyncReplicas: m.Spec.MinInSyncReplicas, RetentionBytes: m.Spec.Retention.Bytes,
			MaxMessageBytes: m.Spec.MaxMessageBytes, DisplayName: m.Spec.DisplayName, Description: m.Spec.Description,
		}
		d, err := ParseRetention(m.Spec.Retention.Time)
		if err != nil {
			return nil, fmt.Errorf("room %q: %w", s.Name, err)
		}
		s.Retention = d
		specs = append(specs, s)
	}
	return specs, nil
}

// ReadManifestDir reads every *.yaml file of dir, in name order.
func ReadManifestDir(dir string) ([]Spec, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("room: no *.yaml ChatRoom manifests in %s", dir)
	}
	slices.Sort(files)
	var all []Spec
	var errs []error
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		specs, err := ParseManifests(data)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
		}
		all = append(all, specs...)
	}
	return all, errors.Join(errs...)
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// ProvisionManifestDir gives every ChatRoom manifest in dir its topic and
// registry entry on cluster, forcing replication factor rf (and a minISR
// it allows): dev mode's provisioning, and the test harnesses' that stand
// in for it. Clusters run by the operator are provisioned by the operator.
func ProvisionManifestDir(ctx context.Context, cluster *kafkabus.Cluster, dir string, rf int16) ([]Spec, error) {
	specs, err := ReadManifestDir(dir)
	if err != nil {
		return nil, err
	}
	return Provision(ctx, cluster, rf, specs...)
}

// Provision gives each spec, defaults applied, its topic and registry entry
// on cluster, forcing replication factor rf (and a minISR it allows), as
// ProvisionManifestDir does for manifests. It returns the specs as
// provisioned.
func Provision(ctx context.Context, cluster *kafkabus.Cluster, rf int16, specs ...Spec) ([]Spec, error) {
	specs = slices.Clone(specs)
	infos := make([]Info, len(specs))
	for i := range specs {
		specs[i] = specs[i].WithDefaults(rf)
		specs[i].ReplicationFactor = rf
		specs[i].MinInSyncReplicas = min(specs[i].MinInSyncReplicas, rf)
		if err := specs[i].Validate(); err != nil {
			return nil, fmt.Errorf("room %q: %w", specs[i].Name, err)
		}
		infos[i] = specs[i].Info()
	}
	client, err := cluster.AdminClient()
	if err != nil {
		return nil, err
	}
	defer client.Close()
	p := NewProvisioner(client)
	if err := p.EnsureRegistry(ctx, rf); err != nil {
		return nil, err
	}
	if err := p.Ensure(ctx, specs...); err != nil {
		return nil, err
	}
	w := cluster.Writer()
	defer w.Close()
	if err := Publish(ctx, w, infos...); err != nil {
		return nil, err
	}
	return specs, nil
}

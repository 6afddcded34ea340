package room

import (
	"errors"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

func TestWithDefaults(t *testing.T) {
	s := Spec{Name: "lobby"}.WithDefaults(3)
	want := Spec{Name: "lobby", Namespace: "default", Topic: "palaver.room.default.lobby", Partitions: 1,
		ReplicationFactor: 3, MinInSyncReplicas: 2, Retention: DefaultRetention}
	if s != want {
		t.Fatalf("WithDefaults = %+v\nwant %+v", s, want)
	}
	if got := (Spec{Name: "x"}).WithDefaults(1).MinInSyncReplicas; got != 1 {
		t.Fatalf("minISR on a single broker = %d, want 1", got)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Spec)
		ok     bool
	}{
		{"defaults", func(*Spec) {}, true},
		{"bad name", func(s *Spec) { s.Name = "Lobby!" }, false},
		{"bad topic", func(s *Spec) { s.Topic = "a/b" }, false},
		{"zero partitions", func(s *Spec) { s.Partitions = 0 }, false},
		{"minISR above RF", func(s *Spec) { s.MinInSyncReplicas = 4 }, false},
		{"tiny retention", func(s *Spec) { s.Retention = time.Second }, false},
		{"unlimited retention", func(s *Spec) { s.Retention = -1 }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Spec{Name: "lobby"}.WithDefaults(3)
			tt.mutate(&s)
			err := s.Validate()
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidSpec)) {
				t.Fatalf("Validate = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestTopicConfigsMakeRetentionApply(t *testing.T) {
	tests := []struct {
		retention time.Duration
		segmentMs string
	}{
		{time.Hour, "360000"},             // a tenth: 6 minutes
		{5 * time.Minute, "60000"},        // never below a minute
		{30 * 24 * time.Hour, "86400000"}, // never above a day
		{7 * 24 * time.Hour, "60480000"},  // the default retention
	}
	for _, tt := range tests {
		c := Spec{Name: "r", Retention: tt.retention}.WithDefaults(3).TopicConfigs()
		if c["segment.ms"] != tt.segmentMs {
			t.Errorf("retention %v: segment.ms = %s, want %s", tt.retention, c["segment.ms"], tt.segmentMs)
		}
		if c["message.timestamp.type"] != "LogAppendTime" || c["min.insync.replicas"] != "2" {
			t.Errorf("retention %v: configs %v", tt.retention, c)
		}
	}
	c := Spec{Name: "r", Retention: -1}.WithDefaults(3).TopicConfigs()
	if _, ok := c["segment.ms"]; ok || c["retention.ms"] != "-1" {
		t.Errorf("unlimited retention: %v", c)
	}
}

func TestParseManifests(t *testing.T) {
	specs, err := ParseManifests([]byte(`
# two rooms in one stream
apiVersion: chat.palaver.dev/v1alpha1
kind: ChatRoom
metadata: {name: ops, namespace: team-a, labels: {x: y}}
spec:
  topicName: custom.ops
  partitions: 3
  replicationFactor: 3
  minInSyncReplicas: 2
  retention: {time: 2h, bytes: 1000}
  deletionPolicy: Delete
status: {observedGeneration: 4}
---
apiVersion: chat.palaver.dev/v1alpha1
kind: ChatRoom
metadata: {name: lobby}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Spec{
		{Name: "ops", Namespace: "team-a", Topic: "custom.ops", Partitions: 3, ReplicationFactor: 3, MinInSyncReplicas: 2, Retention: 2 * time.Hour, RetentionBytes: 1000},
		{Name: "lobby"},
	}
	if len(specs) != 2 || specs[0] != want[0] || specs[1] != want[1] {
		t.Fatalf("ParseManifests = %+v\nwant %+v", specs, want)
	}

	for _, bad := range []string{
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
		"apiVersion: chat.palaver.dev/v1alpha1\nkind: ChatRoom\nspec: {retention: {time: forever}}\n",
		"kind: [",
	} {
		if _, err := ParseManifests([]byte(bad)); err == nil {
			t.Errorf("ParseManifests(%q) succeeded", bad)
		}
	}
}

func TestSamplesAreValidRooms(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	specs, err := ReadManifestDir(filepath.Join(filepath.Dir(file), "..", "..", "k8s", "samples"))
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) < 3 {
		t.Fatalf("%d sample rooms, want at least 3", len(specs))
	}
	for _, s := range specs {
		if err := s.WithDefaults(1).Validate(); err != nil {
			t.Errorf("sample %q: %v", s.Name, err)
		}
	}
}

func TestParseRetention(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, true},
		{"168h", 168 * time.Hour, true},
		{"1h30m", 90 * time.Minute, true},
		{"unlimited", -1, true},
		{"-1h", 0, false},
		{"0s", 0, false},
		{"7d", 0, false},
		{"forever", 0, false},
	} {
		got, err := ParseRetention(tt.in)
		if tt.ok != (err == nil) || got != tt.want || err != nil && !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("ParseRetention(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestDriftRemovesOverridesTheSpecLeavesOut(t *testing.T) {
	s := Spec{Name: "r", Retention: -1}.WithDefaults(1)
	st := TopicState{Exists: true, Configs: s.TopicConfigs(), ConfigSources: map[string]string{}}
	st.Configs["segment.ms"] = "60000"
	st.ConfigSources["segment.ms"] = "DYNAMIC_TOPIC_CONFIG"
	st.Configs["max.message.bytes"] = "1048588"
	st.ConfigSources["max.message.bytes"] = "DEFAULT_CONFIG"
	d := Drift(s, st)
	want := []ConfigDrift{{Key: "segment.ms", Have: "60000", Remove: true}}
	if len(d) != 1 || d[0] != want[0] {
		t.Fatalf("Drift = %+v, want %+v", d, want)
	}
}

// TestTopicID checks that topic ids are spelt as Kafka's tools spell them
// (Uuid.toString: URL-safe base64, no padding).
func TestTopicID(t *testing.T) {
	for _, tt := range []struct {
		id   [16]byte
		want string
	}{
		{[16]byte{0x22, 0x72, 0x44, 0x11, 0xb8, 0x97, 0x4e, 0xa6, 0x9f, 0x86, 0xaa, 0x79, 0x6f, 0x35, 0x93, 0x09}, "InJEEbiXTqafhqp5bzWTCQ"},
		{[16]byte{0xfb, 0xff, 0xbf}, "-_-_AAAAAAAAAAAAAAAAAA"},
	} {
		if got := TopicID(tt.id); got != tt.want {
			t.Errorf("TopicID(%x) = %s, want %s", tt.id, got, tt.want)
		}
	}
}

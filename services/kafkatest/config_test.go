package kafkatest

import (
	"regexp"
	"strings"
	"testing"
)

func TestClusterIDNeverLooksLikeAnOption(t *testing.T) {
	// One id in 64 would start with '-' if drawn naively, and the storage
	// tool would take it for an option.
	for range 2000 {
		id, err := newClusterID()
		if err != nil {
			t.Fatal(err)
		}
		if id[0] == '-' || len(id) != 22 {
			t.Fatalf("cluster id %q", id)
		}
	}
}

func TestJVMArgsPickOneCollector(t *testing.T) {
	for _, long := range []bool{false, true} {
		c := &Cluster{opts: Options{LongLived: long, JVMArgs: []string{"-Xmx1g"}}}
		args := strings.Join(c.jvmArgs(&node{dir: "/n"}, "broker"), " ")
		collectors := len(regexp.MustCompile(`-XX:\+Use\w*GC\b`).FindAllString(args, -1))
		zgc, c1 := strings.Contains(args, "-XX:+UseZGC"), strings.Contains(args, "TieredStopAtLevel=1")
		if collectors != 1 || zgc != long || c1 == long || !strings.HasSuffix(args, "-Xmx1g") {
			t.Errorf("LongLived=%v: %s", long, args)
		}
	}
}

package kafkatest

import "testing"

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

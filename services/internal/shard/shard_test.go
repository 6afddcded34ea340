package shard

import (
	"fmt"
	"testing"
)

// The mapping is a contract between history replicas and gateways of
// different builds: these values must never change.
func TestOfIsStable(t *testing.T) {
	for _, tt := range []struct {
		room   string
		shards int
		want   int
	}{
		{"lobby", 1, 0},
		{"lobby", 0, 0},
		{"lobby", -3, 0},
		{"lobby", 2, 1},
		{"lobby", 3, 2},
		{"random", 2, 0},
		{"ops-alerts", 7, 0},
	} {
		if got := Of(tt.room, tt.shards); got != tt.want {
			t.Errorf("Of(%q, %d) = %d, want %d", tt.room, tt.shards, got, tt.want)
		}
	}
}

func TestOfSpreadsAndMovesLittle(t *testing.T) {
	const rooms, n = 10000, 4
	count := make([]int, n)
	moved := 0
	for i := range rooms {
		name := fmt.Sprintf("room-%d", i)
		s := Of(name, n)
		if s < 0 || s >= n {
			t.Fatalf("Of(%q, %d) = %d, out of range", name, n, s)
		}
		count[s]++
		if grown := Of(name, n+1); grown != s {
			if grown != n {
				t.Fatalf("growing to %d shards moved %q from %d to %d, not to the new shard", n+1, name, s, grown)
			}
			moved++
		}
	}
	for s, c := range count {
		if c < rooms/n*9/10 || c > rooms/n*11/10 {
			t.Errorf("shard %d has %d of %d rooms: uneven %v", s, c, rooms, count)
		}
	}
	if moved < rooms/(n+1)*8/10 || moved > rooms/(n+1)*12/10 {
		t.Errorf("growing to %d shards moved %d of %d rooms, want about %d", n+1, moved, rooms, rooms/(n+1))
	}
}

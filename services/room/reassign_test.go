package room

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"
)

func TestPlanReplicas(t *testing.T) {
	tests := []struct {
		name    string
		current map[int32][]int32
		rf      int
		brokers []int32
		load    map[int32]int
		want    map[int32][]int32
	}{
		{
			name:    "grow 1 to 3 keeps the leader first",
			current: map[int32][]int32{0: {2}, 1: {0}},
			rf:      3, brokers: []int32{0, 1, 2},
			want: map[int32][]int32{0: {2, 1, 0}, 1: {0, 1, 2}},
		},
		{
			name:    "grow picks the least loaded brokers",
			current: map[int32][]int32{0: {0}},
			rf:      2, brokers: []int32{0, 1, 2},
			load: map[int32]int{0: 5, 1: 9, 2: 1},
			want: map[int32][]int32{0: {0, 2}},
		},
		{
			name:    "shrink drops from the end",
			current: map[int32][]int32{0: {1, 2, 0}, 1: {2, 0, 1}},
			rf:      1, brokers: []int32{0, 1, 2},
			want: map[int32][]int32{0: {1}, 1: {2}},
		},
		{
			name:    "nothing to do",
			current: map[int32][]int32{0: {1, 2}},
			rf:      2, brokers: []int32{0, 1, 2},
			want: map[int32][]int32{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PlanReplicas(tt.current, tt.rf, tt.brokers, tt.load)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.EqualFunc(got, tt.want, slices.Equal) {
				t.Fatalf("PlanReplicas = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestPlanReplicasSpreads checks that growing many single-replica
// partitions leaves every broker with the same number of replicas.
func TestPlanReplicasSpreads(t *testing.T) {
	current := map[int32][]int32{}
	for p := range int32(12) {
		current[p] = []int32{p % 3}
	}
	plan, err := PlanReplicas(current, 2, []int32{0, 1, 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	load := map[int32]int{}
	for p, rs := range plan {
		if len(rs) != 2 || rs[0] != current[p][0] || rs[0] == rs[1] {
			t.Fatalf("partition %d: %v from %v", p, rs, current[p])
		}
		for _, b := range rs {
			load[b]++
		}
	}
	if load[0] != 8 || load[1] != 8 || load[2] != 8 {
		t.Fatalf("replicas per broker = %v, want 8 each", load)
	}
}

func TestPlanReplicasNeedsBrokers(t *testing.T) {
	_, err := PlanReplicas(map[int32][]int32{0: {0}}, 3, []int32{0}, nil)
	if !errors.Is(err, ErrNotEnoughBrokers) {
		t.Fatalf("err = %v, want ErrNotEnoughBrokers", err)
	}
}

func ExamplePlanReplicas() {
	// A one-replica topic on broker 1 of a three-broker cluster, moved to
	// replication factor 3.
	plan, _ := PlanReplicas(map[int32][]int32{0: {1}}, 3, []int32{0, 1, 2}, nil)
	fmt.Println(plan[0])
	// Output: [1 0 2]
}

// TestThrottledReplicas checks the throttled replica lists of a
// reassignment: the replicas in place send (leader side), the ones added
// fetch (follower side); a reassignment that only removes replicas copies
// nothing and is not throttled.
func TestThrottledReplicas(t *testing.T) {
	got := ThrottledReplicas(
		map[int32][]int32{1: {2, 0, 1}, 0: {0, 2, 1}, 2: {1, 2}},
		map[int32][]int32{0: {1, 2}, 1: {1}},
	)
	want := []ConfigDrift{
		{Key: LeaderThrottledReplicas, Want: "0:0,1:0,1:2,2:1,2:2"},
		{Key: FollowerThrottledReplicas, Want: "0:1,0:2,1:1"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ThrottledReplicas = %+v, want %+v", got, want)
	}
	if got := ThrottledReplicas(map[int32][]int32{0: {0, 1, 2}}, map[int32][]int32{}); got != nil {
		t.Fatalf("removing replicas only: %+v, want none", got)
	}
}

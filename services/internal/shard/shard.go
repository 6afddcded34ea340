// Package shard maps rooms to history shards. The history service consumes
// only the rooms of its shard and the gateway sends each room's queries to
// that shard, so both must compute the same function: this one.
package shard

import "hash/fnv"

// Of returns the shard, in [0, shards), that serves room. It is a stable
// function of the room name and the shard count alone: jump consistent
// hashing (Lamping and Veach, 2014) over the FNV-1a hash of the name, so
// growing from n to n+1 shards moves only about 1/(n+1) of the rooms, all
// of them to the new shard. shards below 1 count as 1.
func Of(room string, shards int) int {
	if shards <= 1 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(room))
	key := h.Sum64()
	b, j := int64(-1), int64(0)
	for j < int64(shards) {
		b = j
		key = key*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((key>>33)+1)))
	}
	return int(b)
}

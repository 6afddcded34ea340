package gateway

import (
	"testing"

	"palaver.dev/services/internal/gateway/roomhub"
)

// BenchmarkRoomStartReadsDedupWindow: how long a room takes to start on a
// gateway (its first join or HTTP send there, after a restart for
// instance) when its dedup window holds 20,000 messages of 200 bytes, all
// read back from the real broker before the room is served.
//
//	go test -run '^$' -bench RoomStartReadsDedupWindow -benchtime 10x ./internal/gateway/
func BenchmarkRoomStartReadsDedupWindow(b *testing.B) {
	const n = 20_000
	e := sharedEnv(b)
	info := e.newRoom(b, 1)
	for range n / 1000 {
		e.produceDirect(b, info, "bench", 1000, 200)
	}
	meta, err := e.cluster.AdminClient()
	if err != nil {
		b.Fatal(err)
	}
	defer meta.Close()
	src := roomhub.KafkaSource{Cluster: e.cluster, Meta: meta}
	b.ResetTimer()
	for b.Loop() {
		hub := roomhub.New(src, roomhub.Config{Encode: encodeDelivery})
		release, err := hub.Hold(b.Context(), info)
		if err != nil {
			b.Fatal(err)
		}
		if _, ok := hub.Recent(info.Name, "bench", "never-sent"); ok {
			b.Fatal("found a message never sent")
		}
		release()
		hub.Close()
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

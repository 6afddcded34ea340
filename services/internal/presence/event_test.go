package presence

import (
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestDecodeEvent(t *testing.T) {
	good := Event{V: EventVersion, Type: TypeJoin, Gateway: "gw-a", Room: "lobby", Conn: "1", User: "u-1", Name: "Ada"}
	if e, err := DecodeEvent(good.Encode()); err != nil || e != good {
		t.Fatalf("round trip: %+v, %v", e, err)
	}
	for _, tt := range []struct {
		in   string
		want error
	}{
		{`{"v":1,"type":"heartbeat","gateway":"gw-a"}`, nil},
		{`{"v":1,"type":"shutdown","gateway":"gw-a"}`, nil},
		{`nope`, ErrMalformed},
		{"\xff", ErrMalformed},
		{`{"v":2,"type":"heartbeat","gateway":"gw-a"}`, ErrVersion},
		{`{"v":1,"type":"dance","gateway":"gw-a"}`, ErrUnknownType},
		{`{"v":1,"type":"heartbeat","gateway":"gw/a"}`, ErrMalformed},
		{`{"v":1,"type":"heartbeat","gateway":""}`, ErrMalformed},
		{`{"v":1,"type":"join","gateway":"gw-a","room":"Lobby!","conn":"1","user":"u"}`, ErrMalformed},
		{`{"v":1,"type":"join","gateway":"gw-a","room":"lobby","conn":"","user":"u"}`, ErrMalformed},
		{`{"v":1,"type":"join","gateway":"gw-a","room":"lobby","conn":"1","user":""}`, ErrMalformed},
		{`{"v":1,"type":"typing","gateway":"gw-a","room":"lobby","conn":"1","user":"u"}`, nil},
	} {
		_, err := DecodeEvent([]byte(tt.in))
		if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("DecodeEvent(%q) = %v, want %v", tt.in, err, tt.want)
		}
	}
}

// FuzzDecodeEvent: whatever a gateway (or anyone with write access to the
// topic) writes, decoding never panics, and what it accepts is valid.
func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte(`{"v":1,"type":"join","gateway":"gw-a","room":"lobby","conn":"1","user":"u-1","name":"Ada"}`))
	f.Add([]byte(`{"v":1,"type":"heartbeat","gateway":"gw-a"}`))
	f.Add([]byte(`{"v":1,"type":"typing","gateway":"g","room":"a","conn":"c","user":"\u0000"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEvent(b)
		if err != nil {
			return
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("accepted an invalid event %+v: %v", e, err)
		}
		m := newMachine(DefaultTiming())
		m.apply(e, 0, t0)
	})
}

func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.OnlineUsers.WithLabelValues("lobby").Set(2)
	m.Connections.WithLabelValues("lobby").Set(3)
	m.PublishLatency.Observe(0.01)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
}

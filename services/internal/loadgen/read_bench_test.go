package loadgen

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"palaver.dev/services/internal/protocol"
)

// serverFrame returns p as the gateway sends it: one final, unmasked text
// frame.
func serverFrame(p []byte) []byte {
	b := []byte{0x80 | opText}
	switch n := len(p); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, p...)
}

// messageStream returns n message frames of run id, seq 0 to n-1, stored
// at offsets from 1000 on, as a member's socket carries them.
func messageStream(t testing.TB, id string, n int) []byte {
	var s []byte
	for seq := range n {
		p, err := json.Marshal(protocol.MessageFrame{
			Op: protocol.OpMessage, Room: "bench-b", ID: id + "." + strconv.Itoa(seq),
			Sender: protocol.User{ID: "member-" + strconv.Itoa(seq%13), Name: "member " + strconv.Itoa(seq%13)},
			Text:   strconv.Itoa(seq) + " " + strings.Repeat("x", 100), Time: protocol.Time{Time: time.Unix(1_700_000_000, 0)},
			Partition: 3, Offset: int64(1000 + seq), Cursor: "3:" + strconv.Itoa(1000+seq),
		})
		if err != nil {
			t.Fatal(err)
		}
		s = append(s, serverFrame(p)...)
	}
	return s
}

// BenchmarkMemberRead is one member's read path in a run: a frame read off
// the socket's buffer, told apart, checked and timed. The socket's system
// calls are not in it.
//
//	go test -run '^$' -bench MemberRead -benchmem ./internal/loadgen/
func BenchmarkMemberRead(b *testing.B) {
	const n = 4096
	r := &run{cfg: Config{Count: n}, id: "load-0123abcd", sentAt: make([]atomic.Int64, n), clock: time.Now()}
	stream := messageStream(b, r.id, n)
	r.closing.Store(true) // the end of the stream ends the read quietly
	b.ReportAllocs()
	cpu0 := processCPU(b)
	for b.Loop() {
		in := &socketReader{r: bytes.NewReader(stream)}
		m := &member{ws: &wsConn{br: bufio.NewReaderSize(in, 32<<10), in: in}, got: make([]uint64, (n+63)/64), lat: make([]time.Duration, 0, n), errs: map[string]int{}}
		r.read(m)
		if m.read.Load() != n {
			b.Fatalf("read %d of %d", m.read.Load(), n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N*n), "cpu-ns/delivery")
}

// processCPU returns the CPU time the process used so far (user and
// system, every thread): a figure a crowded machine disturbs less than
// wall time.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

package gateway

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkRoomWrites: the connections of a room of 100 members, on
// loopback TCP sockets whose far ends are read by this process, are
// handed b.N messages of 330 bytes a millisecond apart (scenario A of
// `palaver bench`) and flushed after each one, as a room's tail does when
// its messages come one at a time, or after every second one, as a busy
// room that holds its flush (roomhub's FlushHold) mostly does. Reports the
// process's CPU time per delivery (the readers' included) with the flush
// workers writing to the sockets (see conn.flush), with the flushing
// goroutine writing them itself (inline), and with every write left to
// the writers, lingering for the next flush (writerLinger) or not:
//
//	go test -run '^$' -bench RoomWrites -benchtime 3000x ./internal/gateway/
func BenchmarkRoomWrites(b *testing.B) {
	for _, c := range []struct {
		name     string
		linger   time.Duration
		perFlush int
		direct   bool
		inline   bool
	}{
		{"workers,flush=1", writerLinger, 1, true, false},
		{"inline,flush=1", writerLinger, 1, true, true},
		{"linger=5ms,flush=1", writerLinger, 1, false, false},
		{"linger=off,flush=1", 0, 1, false, false},
		{"workers,flush=2", writerLinger, 2, true, false},
		{"inline,flush=2", writerLinger, 2, true, true},
		{"linger=5ms,flush=2", writerLinger, 2, false, false},
		{"linger=off,flush=2", 0, 2, false, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			defer func(l time.Duration, d, i bool) { writerLinger, directFlush, flushInline = l, d, i }(writerLinger, directFlush, flushInline)
			writerLinger, directFlush, flushInline = c.linger, c.direct, c.inline
			benchRoomWrites(b, c.perFlush)
		})
	}
}

func benchRoomWrites(b *testing.B, perFlush int) {
	const members = 100
	// A queue that holds every message: a starved machine's writers fall
	// behind (and coalesce by themselves) rather than fail the benchmark.
	s := &Server{cfg: Config{QueueSize: b.N + 1}.withDefaults(), m: NewMetrics(prometheus.NewRegistry())}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	subs := make([]*roomSub, members)
	for i := range subs {
		far, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		nc, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = nc.Close(); _ = far.Close() })
		go func() { _, _ = io.CopyBuffer(io.Discard, far, make([]byte, 64<<10)) }()
		c := &conn{s: s, nc: nc, raw: rawConn(nc), closed: make(chan struct{})}
		subs[i] = &roomSub{c: c, name: "bench", delivered: s.m.MessagesDelivered.WithLabelValues("bench")}
	}
	frame := make([]byte, 330)
	for i := range frame {
		frame[i] = 'x'
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b.ResetTimer()
	start, writes, switches := cpu(), writeCalls(b), contextSwitches()
	next := time.Now()
	for i := range b.N {
		time.Sleep(time.Until(next))
		next = next.Add(time.Millisecond)
		for _, rs := range subs {
			if !rs.c.queue(outItem{frame: frame, rs: rs}, false, true) {
				b.Fatal("queue full")
			}
		}
		if (i+1)%perFlush == 0 {
			for _, rs := range subs {
				rs.Flush()
			}
		}
	}
	for _, rs := range subs {
		rs.Flush()
	}
	for _, rs := range subs { // every frame written
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Microsecond) {
			rs.c.mu.Lock()
			queued := rs.c.queued
			rs.c.mu.Unlock()
			if queued == 0 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("frames not written within 30 s")
			}
		}
	}
	used, wrote, switched := cpu()-start, writeCalls(b)-writes, contextSwitches()-switches
	b.StopTimer()
	b.ReportMetric(float64(used.Nanoseconds())/float64(b.N*members), "cpu-ns/delivery")
	b.ReportMetric(float64(wrote)/float64(b.N*members), "writes/delivery")
	b.ReportMetric(float64(switched)/float64(b.N*members), "ctxsw/delivery")
}

// contextSwitches is the context switches of the process's threads so
// far (those of /proc/self/task/*/status; a thread that ended is not
// counted).
func contextSwitches() int64 {
	paths, _ := filepath.Glob("/proc/self/task/*/status")
	var n int64
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			if _, v, ok := strings.Cut(line, "ctxt_switches:"); ok {
				k, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += k
			}
		}
	}
	return n
}

// writeCalls is the process's write system calls so far (syscw of
// /proc/self/io).
func writeCalls(b *testing.B) int64 {
	io, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Skip("no /proc/self/io:", err)
	}
	for line := range strings.Lines(string(io)) {
		if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	b.Skip("no syscw in /proc/self/io")
	return 0
}

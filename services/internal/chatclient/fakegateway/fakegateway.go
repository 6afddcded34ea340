// Package fakegateway is a small, scripted stand-in for Palaver's gateway
// that speaks protocol v1 on loopback, for the unit tests of clients. It
// keeps each room's messages in memory on one partition; it is not a
// reference implementation of the gateway (that one is tested against Kafka).
package fakegateway

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"palaver.dev/services/internal/cursor"
	"palaver.dev/services/internal/protocol"
)

// Tokens the fake accepts: "tok-<name>" names user u-<name> with display
// name <name>; POST /v1/dev/login issues them. "tok-lobbyonly-<name>" may
// only join lobby.
const tokenPrefix = "tok-"

// Server is a running fake gateway.
type Server struct {
	*httptest.Server

	mu    sync.Mutex
	rooms map[string]*room
	conns map[*conn]bool
	// Unavailable makes the next N sends answer unavailable after storing
	// (the case a client must retry with the same id).
	unavailable int
	// RejectRate makes the next N sends answer rate_limited without storing.
	rateLimited  int
	backlogDelay time.Duration
	joins        []JoinRecord
}

// JoinRecord is a join the fake received.
type JoinRecord struct {
	User, Room, Cursor string
	Last               int
}

type room struct {
	info     map[string]string
	messages []msg
	ids      map[string]int // sender+id -> index, for dedup
}

type msg struct {
	ID, SenderID, SenderName, Text string
	Time                           time.Time
	ClientTime                     time.Time // as the send said; zero when it did not
}

type conn struct {
	ws     *websocket.Conn
	user   string
	name   string
	mu     sync.Mutex
	joined map[string]bool
}

// Start serves a fake gateway with the rooms lobby, random and secret (which
// nobody may join) until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := New()
	t.Cleanup(s.Close)
	return s
}

// New serves a fake gateway like Start, until Close.
func New() *Server {
	s := &Server{
		rooms: map[string]*room{
			"lobby":  {info: map[string]string{"name": "lobby", "display_name": "Lobby", "description": "Say hello"}, ids: map[string]int{}},
			"random": {info: map[string]string{"name": "random", "display_name": "Random", "description": "Anything goes"}, ids: map[string]int{}},
			"secret": {info: map[string]string{"name": "secret", "display_name": "Secret"}, ids: map[string]int{}},
		},
		conns: map[*conn]bool{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ws", s.serveWS)
	mux.HandleFunc("POST /v1/dev/login", s.devLogin)
	mux.HandleFunc("GET /v1/rooms", s.listRooms)
	mux.HandleFunc("GET /v1/rooms/{room}/messages", s.history)
	mux.HandleFunc("GET /v1/rooms/{room}/search", s.search)
	mux.HandleFunc("POST /v1/rooms/{room}/messages", s.post)
	s.Server = httptest.NewServer(mux)
	return s
}

// Close closes every connection (going away) and stops the server.
func (s *Server) Close() {
	s.CloseAll(protocol.CloseGoingAway, "server closed")
	s.Server.Close()
}

// Token returns a token the fake accepts for name.
func Token(name string) string { return tokenPrefix + name }

// Seed stores messages in a room as if sent by sender.
func (s *Server) Seed(roomName, sender string, texts ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[roomName]
	for i, text := range texts {
		r.messages = append(r.messages, msg{ID: fmt.Sprintf("seed-%d-%d", len(r.messages), i), SenderID: "u-" + sender, SenderName: sender, Text: text, Time: time.Now()})
	}
}

// Wipe empties a room, as a broker wiped or a topic created again would:
// offsets start again at 0, and older cursors point past the end.
func (s *Server) Wipe(roomName string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rooms[roomName].messages = nil
}

// FailNextSends makes the next n sends answer unavailable after storing.
func (s *Server) FailNextSends(n int) { s.mu.Lock(); s.unavailable = n; s.mu.Unlock() }

// RateLimitNextSends makes the next n sends answer rate_limited.
func (s *Server) RateLimitNextSends(n int) { s.mu.Lock(); s.rateLimited = n; s.mu.Unlock() }

// DelayJoinBacklog makes every join wait d between its joined answer and
// the messages it delivers first, as a gateway reading them from Kafka does.
func (s *Server) DelayJoinBacklog(d time.Duration) { s.mu.Lock(); s.backlogDelay = d; s.mu.Unlock() }

// Joins returns the joins received so far.
func (s *Server) Joins() []JoinRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]JoinRecord(nil), s.joins...)
}

// Messages returns the texts stored in a room.
func (s *Server) Messages(roomName string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, m := range s.rooms[roomName].messages {
		out = append(out, m.Text)
	}
	return out
}

// CloseAll closes every WebSocket connection with code.
func (s *Server) CloseAll(code websocket.StatusCode, reason string) {
	cs := s.connsNow()
	for _, c := range cs {
		c.ws.Close(code, reason)
	}
}

// EndRoom ends every connection's membership of roomName as the gateway
// does by itself: an error frame with code, the room and no ref (not_found
// for a deleted room, unavailable for a recovery that failed).
func (s *Server) EndRoom(roomName, code string) {
	cs := s.connsNow()
	for _, c := range cs {
		c.mu.Lock()
		joined := c.joined[roomName]
		delete(c.joined, roomName)
		c.mu.Unlock()
		if joined {
			c.send(protocol.ErrorFrame{Op: protocol.OpError, Code: code, Message: "membership ended", Room: roomName})
		}
	}
}

// connsNow returns the open connections.
func (s *Server) connsNow() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Collect(maps.Keys(s.conns))
}

// Conns returns how many WebSocket connections are open.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// WaitConns waits until n WebSocket connections are open, failing t after
// 10 s. A client's close reaches the fake's reader after the client has
// returned, so a count read right then may still hold connections that
// are already closing.
func (s *Server) WaitConns(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for got := s.Conns(); got != n; got = s.Conns() {
		if time.Now().After(deadline) {
			t.Fatalf("%d WebSocket connections open after 10 s, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func userOf(token string) (id, name, rooms string, ok bool) {
	name, ok = strings.CutPrefix(token, tokenPrefix)
	if !ok || name == "" {
		return "", "", "", false
	}
	if n, only := strings.CutPrefix(name, "lobbyonly-"); only {
		return "u-" + n, n, "lobby", true
	}
	return "u-" + name, name, "", true
}

func bearer(r *http.Request) string {
	t, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return t
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func httpErr(w http.ResponseWriter, code, message string) {
	writeJSON(w, protocol.HTTPStatus(code), protocol.HTTPError{Code: code, Message: message})
}

func (s *Server) devLogin(w http.ResponseWriter, r *http.Request) {
	var in struct{ Name string }
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Name == "" {
		httpErr(w, protocol.CodeBadRequest, "name required")
		return
	}
	writeJSON(w, 200, map[string]any{"token": Token(in.Name), "expires_at": time.Now().Add(time.Hour)})
}

func (s *Server) listRooms(w http.ResponseWriter, r *http.Request) {
	if _, _, _, ok := userOf(bearer(r)); !ok {
		httpErr(w, protocol.CodeUnauthorized, "no valid token")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var rooms []map[string]string
	for _, name := range []string{"lobby", "random", "secret"} {
		rooms = append(rooms, s.rooms[name].info)
	}
	writeJSON(w, 200, map[string]any{"rooms": rooms})
}

// frameOf renders stored message i of a room as a message frame.
func frameOf(roomName string, i int, m msg) protocol.MessageFrame {
	var c cursor.Cursor
	c.Advance(0, int64(i))
	return protocol.MessageFrame{Op: protocol.OpMessage, Room: roomName, ID: m.ID,
		Sender: protocol.User{ID: m.SenderID, Name: m.SenderName}, Text: m.Text, Time: protocol.Time{Time: m.Time},
		Partition: 0, Offset: int64(i), Cursor: c.String(), ClientTime: protocol.Time{Time: m.ClientTime}}
}

func positionOf(token string) (int, error) {
	c, err := cursor.Parse(token)
	if err != nil {
		return 0, err
	}
	next, _ := c.Next(0)
	return int(next), nil
}

func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	if _, _, _, ok := userOf(bearer(r)); !ok {
		httpErr(w, protocol.CodeUnauthorized, "no valid token")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := r.PathValue("room")
	rm := s.rooms[name]
	if rm == nil {
		httpErr(w, protocol.CodeNotFound, "no such room")
		return
	}
	end := len(rm.messages)
	if b := r.URL.Query().Get("before"); b != "" {
		p, err := positionOf(b)
		if err != nil {
			httpErr(w, protocol.CodeBadRequest, "bad cursor")
			return
		}
		end = min(p, end)
	}
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit <= 0 || limit > 500 {
		limit = 50
	}
	start := max(0, end-limit)
	msgs := []protocol.MessageFrame{}
	for i := start; i < end; i++ {
		msgs = append(msgs, frameOf(name, i, rm.messages[i]))
	}
	var before cursor.Cursor
	before.Advance(0, int64(start)-1)
	writeJSON(w, 200, map[string]any{"messages": msgs, "before": before.String()})
}

// search answers like the gateway, simply: messages whose space-separated
// words include every word of q (case-insensitively), newest first, all in
// one page, each with its highlight.
func (s *Server) search(w http.ResponseWriter, r *http.Request) {
	if _, _, _, ok := userOf(bearer(r)); !ok {
		httpErr(w, protocol.CodeUnauthorized, "no valid token")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := r.PathValue("room")
	rm := s.rooms[name]
	if rm == nil {
		httpErr(w, protocol.CodeNotFound, "no such room")
		return
	}
	want := strings.Fields(strings.ToLower(r.URL.Query().Get("q")))
	if len(want) == 0 {
		httpErr(w, protocol.CodeBadRequest, "no words to search for")
		return
	}
	type result struct {
		protocol.MessageFrame
		Highlight []map[string]any `json:"highlight"`
	}
	results := []result{}
	for i := len(rm.messages) - 1; i >= 0; i-- {
		m := rm.messages[i]
		var segs []map[string]any
		found := map[string]bool{}
		for j, word := range strings.Split(m.Text, " ") {
			if j > 0 {
				segs = append(segs, map[string]any{"text": " "})
			}
			mark := slices.Contains(want, strings.ToLower(word))
			found[strings.ToLower(word)] = found[strings.ToLower(word)] || mark
			segs = append(segs, map[string]any{"text": word, "mark": mark})
		}
		if !slices.ContainsFunc(want, func(w string) bool { return !found[w] }) {
			results = append(results, result{frameOf(name, i, m), segs})
		}
	}
	writeJSON(w, 200, map[string]any{"results": results})
}

func (s *Server) post(w http.ResponseWriter, r *http.Request) {
	id, name, _, ok := userOf(bearer(r))
	if !ok {
		httpErr(w, protocol.CodeUnauthorized, "no valid token")
		return
	}
	var in struct{ ID, Text string }
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		httpErr(w, protocol.CodeBadRequest, "bad body")
		return
	}
	ack, code := s.store(r.PathValue("room"), id, name, in.ID, in.Text, "")
	if code != "" {
		httpErr(w, code, code)
		return
	}
	writeJSON(w, 201, ack)
}

// store appends a message, or returns the first one's ack for a duplicate
// id; else the error code.
func (s *Server) store(roomName, userID, userName, id, text, clientTime string) (protocol.AckFrame, string) {
	var sentAt time.Time
	if clientTime != "" {
		t, err := time.Parse(time.RFC3339, clientTime)
		if err != nil {
			return protocol.AckFrame{}, protocol.CodeBadRequest
		}
		sentAt = t
	}
	s.mu.Lock()
	rm := s.rooms[roomName]
	if rm == nil {
		s.mu.Unlock()
		return protocol.AckFrame{}, protocol.CodeNotFound
	}
	if id == "" || text == "" {
		s.mu.Unlock()
		return protocol.AckFrame{}, protocol.CodeBadRequest
	}
	key := userID + "\x00" + id
	i, dup := rm.ids[key]
	if !dup {
		i = len(rm.messages)
		rm.ids[key] = i
		rm.messages = append(rm.messages, msg{ID: id, SenderID: userID, SenderName: userName, Text: text, Time: time.Now().UTC(), ClientTime: sentAt})
	}
	m := rm.messages[i]
	var targets []*conn
	for c := range s.conns {
		c.mu.Lock()
		if c.joined[roomName] {
			targets = append(targets, c)
		}
		c.mu.Unlock()
	}
	// Delivered under the lock that numbered it, so that members read a
	// room's messages in order, as the protocol promises.
	if !dup {
		for _, c := range targets {
			c.send(frameOf(roomName, i, m))
		}
	}
	s.mu.Unlock()
	return protocol.AckFrame{Op: protocol.OpAck, Room: roomName, ID: id, Partition: 0, Offset: int64(i), Time: protocol.Time{Time: m.Time}, Duplicate: dup}, ""
}

func (c *conn) send(v any) {
	b, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.mu.Lock() // keeps a join's frames in order with live ones
	defer c.mu.Unlock()
	_ = c.ws.Write(ctx, websocket.MessageText, b)
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	c := &conn{ws: ws, joined: map[string]bool{}}
	ctx := r.Context()
	reply := c.send
	fail := func(ref, code, message, room string) {
		reply(protocol.ErrorFrame{Op: protocol.OpError, Ref: ref, Code: code, Message: message, Room: room})
	}

	// hello
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, b, err := ws.Read(hctx)
	cancel()
	var f protocol.Command
	if err != nil || json.Unmarshal(b, &f) != nil || f.Op != protocol.OpHello {
		ws.Close(protocol.CloseBadFrame, "expected hello")
		return
	}
	if !slices.Contains(f.Versions, protocol.Version) {
		reply(protocol.ErrorFrame{Op: protocol.OpError, Ref: f.Ref, Code: protocol.CodeUnsupportedVersion, Message: "speaks 1",
			Supported: []int{protocol.Version}})
		ws.Close(protocol.CloseBadFrame, "no common version")
		return
	}
	token := f.Token
	if token == "" {
		token = bearer(r)
	}
	uid, name, only, ok := userOf(token)
	if !ok {
		fail(f.Ref, protocol.CodeUnauthorized, "bad token", "")
		ws.Close(protocol.CloseUnauthorized, "unauthorized")
		return
	}
	c.user, c.name = uid, name
	reply(protocol.WelcomeFrame{Op: protocol.OpWelcome, Ref: f.Ref, Version: protocol.Version, User: protocol.User{ID: uid, Name: name},
		Limits: protocol.Limits{MaxTextBytes: 4096, MaxFrameBytes: 16384, SendsPerSecond: 10, SendBurst: 20}})
	s.mu.Lock()
	s.conns[c] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()

	for {
		_, b, err := ws.Read(ctx)
		if err != nil {
			return
		}
		var f protocol.Command
		if json.Unmarshal(b, &f) != nil {
			fail("", protocol.CodeBadFrame, "not JSON", "")
			continue
		}
		switch f.Op {
		case protocol.OpPing:
			reply(protocol.PongFrame{Op: protocol.OpPong, Ref: f.Ref})
		case protocol.OpJoin:
			s.join(c, f, only)
		case protocol.OpLeave:
			c.mu.Lock()
			was := c.joined[f.Room]
			delete(c.joined, f.Room)
			c.mu.Unlock()
			if !was {
				fail(f.Ref, protocol.CodeNotJoined, "not joined", f.Room)
				continue
			}
			reply(protocol.LeftFrame{Op: protocol.OpLeft, Ref: f.Ref, Room: f.Room})
		case protocol.OpSend:
			c.mu.Lock()
			joined := c.joined[f.Room]
			c.mu.Unlock()
			if !joined {
				fail(f.Ref, protocol.CodeNotJoined, "join first", f.Room)
				continue
			}
			s.mu.Lock()
			limited := s.rateLimited > 0
			if limited {
				s.rateLimited--
			}
			s.mu.Unlock()
			if limited {
				fail(f.Ref, protocol.CodeRateLimited, "slow down", f.Room)
				continue
			}
			ack, code := s.store(f.Room, c.user, c.name, f.ID, f.Text, f.ClientTime)
			if code != "" {
				fail(f.Ref, code, code, f.Room)
				continue
			}
			s.mu.Lock()
			unavailable := s.unavailable > 0
			if unavailable {
				s.unavailable--
			}
			s.mu.Unlock()
			if unavailable {
				fail(f.Ref, protocol.CodeUnavailable, "Kafka did not answer in time", f.Room)
				continue
			}
			ack.Ref = f.Ref
			reply(ack)
		default:
			fail(f.Ref, protocol.CodeUnknownOp, "unknown op "+f.Op, "")
		}
	}
}

func (s *Server) join(c *conn, f protocol.Command, only string) {
	fail := func(code string) {
		c.send(protocol.ErrorFrame{Op: protocol.OpError, Ref: f.Ref, Code: code, Message: code, Room: f.Room})
	}
	s.mu.Lock()
	s.joins = append(s.joins, JoinRecord{User: c.name, Room: f.Room, Cursor: f.Cursor, Last: f.Last})
	rm := s.rooms[f.Room]
	s.mu.Unlock()
	switch {
	case rm == nil:
		fail(protocol.CodeNotFound)
		return
	case f.Room == "secret" || only != "" && f.Room != only:
		fail(protocol.CodeForbidden)
		return
	}
	start := -1
	if f.Cursor != "" {
		p, err := positionOf(f.Cursor)
		if err != nil {
			fail(protocol.CodeBadRequest)
			return
		}
		start = p
	}
	// Hold the connection's lock from the snapshot to the last frame of the
	// join, so a live message cannot overtake or be lost.
	s.mu.Lock()
	c.mu.Lock()
	n := len(rm.messages)
	reset := start > n // past the end: the room was wiped since
	if reset {
		start = 0
	}
	if start < 0 {
		start = max(0, n-min(f.Last, 500))
	}
	backlog := append([]msg(nil), rm.messages[start:n]...)
	c.joined[f.Room] = true
	delay := s.backlogDelay
	s.mu.Unlock()
	var pos cursor.Cursor
	pos.Advance(0, int64(start)-1)
	frames := []any{protocol.JoinedFrame{Op: protocol.OpJoined, Ref: f.Ref, Room: f.Room, Cursor: pos.String(), Recovering: f.Cursor != "", Reset: reset}}
	for i, m := range backlog {
		frames = append(frames, frameOf(f.Room, start+i, m))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i, fr := range frames {
		if i == 1 && delay > 0 {
			time.Sleep(delay) // a slow read of the backlog, after joined
		}
		b, _ := json.Marshal(fr)
		_ = c.ws.Write(ctx, websocket.MessageText, b)
	}
	c.mu.Unlock()
}

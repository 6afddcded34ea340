package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"
	"unicode/utf8"

	"palaver.dev/services/internal/auth"
	"palaver.dev/services/internal/cursor"
	"palaver.dev/services/internal/gateway/roomhub"
	"palaver.dev/services/internal/message"
	"palaver.dev/services/internal/protocol"
	"palaver.dev/services/room"
)

// Limits of the HTTP API.
const (
	maxPostBody       = 32 << 10
	historyReadBudget = 10 * time.Second
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *protoError) {
	if e.code == protocol.CodeUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="palaver"`)
	}
	if e.code == protocol.CodeRateLimited || e.code == protocol.CodeUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, protocol.HTTPStatus(e.code), protocol.HTTPError{Code: e.code, Message: e.msg})
}

// identify authenticates an HTTP API request by its bearer token.
func (s *Server) identify(r *http.Request) (auth.Identity, *protoError) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	id, err := s.verify(ctx, auth.BearerToken(r))
	if err != nil {
		return auth.Identity{}, authError(err)
	}
	return id, nil
}

type roomJSON struct {
	Name        string `json:"name"`
	DisplayName string `json:"display_name,omitempty"`
	Description string `json:"description,omitempty"`
	Online      *int   `json:"online,omitempty"` // users online; absent when presence is off
}

// listRooms serves GET /v1/rooms: the rooms the caller may join.
func (s *Server) listRooms(w http.ResponseWriter, r *http.Request) {
	id, perr := s.identify(r)
	if perr != nil {
		writeError(w, perr)
		return
	}
	rooms, err := s.rooms.List()
	if err != nil {
		writeError(w, lookupError(err))
		return
	}
	out := []roomJSON{}
	for _, in := range rooms {
		if id.MayJoin(in.Name) {
			out = append(out, roomJSON{Name: in.Name, DisplayName: in.DisplayName, Description: in.Description, Online: s.presence.count(in.Name)})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"rooms": out})
}

// postMessage serves POST /v1/rooms/{room}/messages: a send for bots, with
// the same limits and deduplication as the WebSocket's.
func (s *Server) postMessage(w http.ResponseWriter, r *http.Request) {
	id, perr := s.identify(r)
	if perr != nil {
		writeError(w, perr)
		return
	}
	name := r.PathValue("room")
	info, perr := s.authorize(id, name)
	if perr != nil {
		writeError(w, perr)
		return
	}
	if !s.bots.allow(id.UserID, time.Now()) {
		s.m.RejectedFrames.WithLabelValues(protocol.CodeRateLimited).Inc()
		writeError(w, fail(protocol.CodeRateLimited, "too many messages; slow down"))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPostBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, fail(protocol.CodeTooLarge, "request body too large"))
		} else {
			writeError(w, fail(protocol.CodeBadRequest, "cannot read the request body"))
		}
		return
	}
	if !utf8.Valid(body) {
		writeError(w, fail(protocol.CodeInvalidUTF8, "the body is not valid UTF-8"))
		return
	}
	var req struct {
		ID         string `json:"id"`
		Text       string `json:"text"`
		ClientTime string `json:"client_time"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, fail(protocol.CodeBadFrame, "the body must be a JSON object with string fields id and text"))
		return
	}
	env, perr := s.envelope(id, name, req.ID, req.Text, req.ClientTime)
	if perr != nil {
		s.m.RejectedFrames.WithLabelValues(perr.code).Inc()
		writeError(w, perr)
		return
	}
	if s.draining.Load() {
		writeError(w, fail(protocol.CodeUnavailable, "the gateway is shutting down; retry with the same id"))
		return
	}
	// The room's dedup window must be known before the send is stored: a
	// retry whose first try went through another gateway, or through this
	// one before a restart, is recognised by it.
	hctx, cancel := context.WithTimeout(r.Context(), joinTimeout)
	release, err := s.hub.Hold(hctx, info)
	cancel()
	if err != nil {
		s.log.Warn("gateway: cannot read the room for a send", "room", info.Name, "err", err)
		writeError(w, fail(protocol.CodeUnavailable, "the room cannot be read now; retry with the same id"))
		return
	}
	defer release()
	res := make(chan sendResult, 1)
	s.prod.submit(info.Topic, env, func(r sendResult) { res <- r })
	select {
	case sr := <-res:
		if sr.err != nil {
			writeError(w, fail(protocol.CodeUnavailable, "Kafka did not acknowledge the message; retry with the same id"))
			return
		}
		writeJSON(w, http.StatusCreated, ackFrame("", env, sr))
	case <-r.Context().Done():
	}
}

// getMessages serves GET /v1/rooms/{room}/messages: scroll-back (before
// or after a cursor, or around a time), oldest first, from the history
// service or Kafka (history.go).
func (s *Server) getMessages(w http.ResponseWriter, r *http.Request) {
	id, perr := s.identify(r)
	if perr != nil {
		writeError(w, perr)
		return
	}
	info, perr := s.authorize(id, r.PathValue("room"))
	if perr != nil {
		writeError(w, perr)
		return
	}
	s.page(w, r, info)
}

// roomBounds returns the room's partitions, 0 to n-1, and the first and
// end offset of each.
func (s *Server) roomBounds(ctx context.Context, info room.Info) ([]int, map[int]roomhub.Bounds, error) {
	ps := make([]int, info.Partitions)
	for p := range ps {
		ps[p] = p
	}
	bounds, err := s.src.Offsets(ctx, map[string][]int{info.Topic: ps})
	if err != nil {
		return nil, nil, err
	}
	return ps, bounds[info.Topic], nil
}

// pageDedup returns what tells a later copy of a message (one read before
// in the same page, or in the room's dedup window) for a page read from
// Kafka; the room is held for its window while the page is read.
func (s *Server) pageDedup(ctx context.Context, info room.Info) (dup func(message.Stored) bool, release func(), err error) {
	release, err = s.hub.Hold(ctx, info)
	if err != nil {
		return nil, nil, err
	}
	dd := s.hub.NewDedup()
	return func(m message.Stored) bool { return s.hub.Duplicate(info.Name, dd, m) }, release, nil
}

// readPageRange reads the records [from, to) of partition p for a page:
// messages go to ds, later copies (dup) to skipped, and records that are not
// this room's messages are counted and left out.
func (s *Server) readPageRange(ctx context.Context, info room.Info, p int, from, to int64, dup func(message.Stored) bool, ds *[]*roomhub.Delivery, skipped *[]message.Stored) error {
	return s.src.ReadRange(ctx, info.Topic, p, from, to, func(rec roomhub.Record) error {
		d, err := roomhub.DecodeRecord(info.Name, rec)
		if err != nil {
			s.m.Undecodable.WithLabelValues(info.Name).Inc()
			return nil
		}
		if dup(d.Msg) {
			*skipped = append(*skipped, d.Msg)
		} else {
			*ds = append(*ds, d)
		}
		return nil
	})
}

// history reads up to limit messages before the before cursor (the end of
// the room when it has no position in a partition), newest last, and the
// cursor of the page before them ("" when there is nothing older). A
// before cursor of another room, of another incarnation of the room's
// topic, or naming a partition the room does not have is an error
// wrapping roomhub.ErrBadCursor.
func (s *Server) history(ctx context.Context, info room.Info, before cursor.Cursor, limit int) ([]protocol.MessageFrame, string, error) {
	n := int(info.Partitions)
	ids, err := s.src.TopicIDs(ctx, info.Topic)
	if err != nil {
		return nil, "", err
	}
	epoch := cursor.NewEpoch(info.Name, ids[info.Topic])
	if err := checkCursor("before", before, epoch, n); err != nil {
		return nil, "", err
	}
	ps, bounds, err := s.roomBounds(ctx, info)
	if err != nil {
		return nil, "", err
	}
	dup, release, err := s.pageDedup(ctx, info)
	if err != nil {
		return nil, "", err
	}
	defer release()
	var skipped []message.Stored
	end := make([]int64, n)
	first := make([]int64, n)
	var ds []*roomhub.Delivery
	for _, p := range ps {
		b := bounds[p]
		end[p] = b.End
		if next, ok := before.Next(p); ok && next < end[p] {
			end[p] = max(next, b.First)
		}
		first[p] = b.First
		// Twice the page, so later copies among the records (skipped) do
		// not shorten it.
		from := max(b.First, end[p]-2*int64(limit))
		err := s.readPageRange(ctx, info, p, from, end[p], dup, &ds, &skipped)
		if err != nil {
			return nil, "", err
		}
	}
	ds, left := roomhub.PageBackward(ds, limit)
	// newestLeft is, per partition, the newest message read and left out
	// of the page (-1: none).
	newestLeft := make([]int64, n)
	for p := range newestLeft {
		newestLeft[p] = -1
	}
	for _, d := range left {
		newestLeft[d.Msg.Partition] = max(newestLeft[d.Msg.Partition], d.Msg.Offset)
	}
	// The page starts, in each partition, at its first message kept, or
	// where the read ended if none was kept; later copies skipped after
	// every message left out are part of it, so a page of nothing but
	// copies still moves on.
	start := make([]int64, n)
	copy(start, end)
	for _, d := range ds {
		start[d.Msg.Partition] = min(start[d.Msg.Partition], d.Msg.Offset)
	}
	for _, m := range skipped {
		if m.Offset > newestLeft[m.Partition] {
			start[m.Partition] = min(start[m.Partition], m.Offset)
		}
	}
	var pos cursor.Cursor
	pos.SetEpoch(epoch)
	older := false
	for p := range ps {
		pos.Advance(p, start[p]-1)
		older = older || start[p] > first[p]
	}
	olderCursor := ""
	if older {
		olderCursor = pos.String()
	}
	out := make([]protocol.MessageFrame, 0, len(ds))
	for _, d := range ds {
		pos.Advance(d.Msg.Partition, d.Msg.Offset)
		d.Cursor = pos.Clone()
		out = append(out, messageFrame(d))
	}
	return out, olderCursor, nil
}

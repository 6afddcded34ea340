package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/segmentio/kafka-go"

	"palaver.dev/services/internal/cursor"
	"palaver.dev/services/internal/gateway/roomhub"
	"palaver.dev/services/internal/historyapi"
	"palaver.dev/services/internal/message"
	"palaver.dev/services/internal/protocol"
	"palaver.dev/services/room"
)

// Where scroll-back was served from: palaver_gateway_history_queries_total's
// source label.
const (
	sourceHistory  = "history"
	sourceFallback = "kafka_fallback" // history configured but unavailable or behind
	sourceKafka    = "kafka"          // no history configured
)

// kafkaPage is a page of messages, read from Kafka or from history.
type kafkaPage struct {
	Messages []protocol.MessageFrame `json:"messages"`
	Before   string                  `json:"before,omitempty"`
	After    string                  `json:"after,omitempty"`
}

// page serves GET /v1/rooms/{room}/messages for an authorized room: from
// the history service when it is configured and has the position asked
// for, else from Kafka.
func (s *Server) page(w http.ResponseWriter, r *http.Request, info room.Info) {
	req, err := historyapi.ParsePageRequest(r.URL.Query())
	if err != nil {
		writeError(w, fail(protocol.CodeBadRequest, badRequestText(err)))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), historyReadBudget)
	defer cancel()
	epoch, perr := s.checkCursors(ctx, info, req.Before, req.After, req.Seen)
	if perr != nil {
		writeError(w, perr)
		return
	}
	source := sourceKafka
	if s.hist != nil {
		page, err := s.hist.Messages(ctx, info.Name, req)
		if err == nil {
			s.m.HistoryQueries.WithLabelValues(sourceHistory).Inc()
			out := kafkaPage{Messages: make([]protocol.MessageFrame, len(page.Messages)),
				Before: withEpoch(page.Before, epoch), After: withEpoch(page.After, epoch)}
			for i, m := range page.Messages {
				out.Messages[i] = historyFrame(m, epoch)
			}
			writeJSON(w, http.StatusOK, out)
			return
		}
		if errors.Is(err, historyapi.ErrBadRequest) {
			writeError(w, fail(protocol.CodeBadRequest, badRequestText(err)))
			return
		}
		s.log.Debug("gateway: history cannot answer; reading Kafka", "room", info.Name, "err", err)
		source = sourceFallback
	}
	s.m.HistoryQueries.WithLabelValues(source).Inc()
	page, err := s.kafkaPage(ctx, info, epoch, req)
	if errors.Is(err, roomhub.ErrBadCursor) {
		writeError(w, fail(protocol.CodeBadRequest, badCursorText(err)))
		return
	}
	if err != nil {
		s.log.Warn("gateway: scroll-back read failed", "room", info.Name, "err", err)
		writeError(w, fail(protocol.CodeUnavailable, "the room's history cannot be read now; retry"))
		return
	}
	writeJSON(w, http.StatusOK, page)
}

// search serves GET /v1/rooms/{room}/search, which only the history
// service can answer.
func (s *Server) search(w http.ResponseWriter, r *http.Request) {
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
	req, err := historyapi.ParseSearchRequest(r.URL.Query())
	if err != nil {
		writeError(w, fail(protocol.CodeBadRequest, badRequestText(err)))
		return
	}
	if s.hist == nil {
		writeError(w, fail(protocol.CodeUnavailable, "search needs the history service, which this gateway is not configured with"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), historyReadBudget)
	defer cancel()
	epoch, perr := s.checkCursors(ctx, info, req.Seen)
	if perr != nil {
		writeError(w, perr)
		return
	}
	res, err := s.hist.Search(ctx, info.Name, req)
	switch {
	case errors.Is(err, historyapi.ErrBadRequest):
		writeError(w, fail(protocol.CodeBadRequest, badRequestText(err)))
	case err != nil:
		s.log.Warn("gateway: search failed", "room", info.Name, "err", err)
		writeError(w, fail(protocol.CodeUnavailable, "search is unavailable now; retry"))
	default:
		out := searchPage{Results: make([]searchResult, len(res.Results)), Next: res.Next}
		for i, m := range res.Results {
			out.Results[i] = searchResult{MessageFrame: historyFrame(m, epoch), Highlight: m.Highlight}
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// searchPage is the answer to a search.
type searchPage struct {
	Results []searchResult `json:"results"`
	Next    string         `json:"next,omitempty"`
}

// searchResult is a message frame with its text cut into segments, the
// words the search matched marked.
type searchResult struct {
	protocol.MessageFrame
	Highlight []historyapi.Segment `json:"highlight"`
}

// historyFrame is a message from the history service as a message frame,
// its cursor stamped with the room's epoch.
func historyFrame(m historyapi.Message, epoch cursor.Epoch) protocol.MessageFrame {
	return protocol.MessageFrame{
		Op: protocol.OpMessage, Room: m.Room, ID: m.ID, Sender: protocol.User{ID: m.Sender.ID, Name: m.Sender.Name}, Text: m.Text,
		Time: protocol.Time{Time: m.Time}, Partition: m.Partition, Offset: m.Offset, Cursor: withEpoch(m.Cursor, epoch),
		ClientTime: protocol.Time{Time: m.ClientTime},
	}
}

// badRequestText is a bad request's message without the package prefix.
func badRequestText(err error) string {
	const prefix = "history: bad request: "
	msg := err.Error()
	if len(msg) > len(prefix) && msg[:len(prefix)] == prefix {
		return msg[len(prefix):]
	}
	return "bad request"
}

// checkCursors checks that cursors a client sent are positions in this
// incarnation of the room's topic (see checkCursor), and returns its epoch.
func (s *Server) checkCursors(ctx context.Context, info room.Info, cs ...cursor.Cursor) (cursor.Epoch, *protoError) {
	ids, err := s.src.TopicIDs(ctx, info.Topic)
	if err != nil {
		s.log.Warn("gateway: topic id unknown", "room", info.Name, "err", err)
		return cursor.Epoch{}, fail(protocol.CodeUnavailable, "the room's history cannot be read now; retry")
	}
	epoch := cursor.NewEpoch(info.Name, ids[info.Topic])
	for i, c := range cs {
		if err := checkCursor([]string{"the cursor", "after", "seen"}[min(i, 2)], c, epoch, int(info.Partitions)); err != nil {
			return epoch, fail(protocol.CodeBadRequest, badCursorText(err))
		}
	}
	return epoch, nil
}

// checkCursor is an error that is roomhub.ErrBadCursor, its message the
// client's, when c cannot be a position in the room's topic of epoch with n
// partitions: another room's, another incarnation of the topic's, or
// naming a partition it lacks. A cursor without epoch (made before epochs)
// is taken as it is.
func checkCursor(what string, c cursor.Cursor, epoch cursor.Epoch, n int) error {
	if e := c.Epoch(); !e.IsZero() && e != epoch {
		if e.Room != epoch.Room {
			return badCursor(what + " is another room's cursor; start again without it")
		}
		return badCursor(what + " is a cursor of the room's topic before it was created again; start again without it")
	}
	for _, p := range c.Partitions() {
		if p >= n {
			return badCursor(fmt.Sprintf("%s names partition %d and the room has %d; start again without it", what, p, n))
		}
	}
	return nil
}

// badCursor is roomhub.ErrBadCursor with the client's message: what is
// wrong with the cursor, without a package's prefix.
type badCursor string

func (e badCursor) Error() string { return string(e) }

// Is makes a badCursor roomhub.ErrBadCursor.
func (e badCursor) Is(target error) bool { return target == roomhub.ErrBadCursor }

// badCursorText is the client's message for err, which wraps
// roomhub.ErrBadCursor.
func badCursorText(err error) string {
	if b, ok := errors.AsType[badCursor](err); ok {
		return string(b)
	}
	return "the cursor is not a position in this room (another room's, or a partition the room does not have); start again without it"
}

// withEpoch stamps a cursor token of the history service, which knows
// positions but not topic ids, with the room's epoch.
func withEpoch(token string, epoch cursor.Epoch) string {
	c, err := cursor.Parse(token)
	if token == "" || err != nil {
		return token
	}
	c.SetEpoch(epoch)
	return c.String()
}

// kafkaPage reads a page from the room's topic.
func (s *Server) kafkaPage(ctx context.Context, info room.Info, epoch cursor.Epoch, req historyapi.PageRequest) (kafkaPage, error) {
	switch req.Kind() {
	case "after":
		msgs, after, err := s.historyAfter(ctx, info, epoch, req.After, req.Limit)
		return kafkaPage{Messages: msgs, After: after}, err
	case "around":
		split, err := s.offsetsAt(ctx, info, req.Around)
		split.SetEpoch(epoch)
		if err != nil {
			return kafkaPage{}, err
		}
		var page kafkaPage
		if n := req.Limit / 2; n > 0 {
			if page.Messages, page.Before, err = s.history(ctx, info, split, n); err != nil {
				return kafkaPage{}, err
			}
		} else {
			page.Before = split.String()
		}
		more, after, err := s.historyAfter(ctx, info, epoch, split, req.Limit-len(page.Messages))
		page.Messages, page.After = append(page.Messages, more...), after
		return page, err
	}
	msgs, before, err := s.history(ctx, info, req.Before, req.Limit)
	return kafkaPage{Messages: msgs, Before: before}, err
}

// historyAfter reads up to limit messages from the position from (a
// partition it lacks: from its first retained offset), oldest first, and
// the position after them.
func (s *Server) historyAfter(ctx context.Context, info room.Info, epoch cursor.Epoch, from cursor.Cursor, limit int) ([]protocol.MessageFrame, string, error) {
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
	var pos cursor.Cursor
	pos.SetEpoch(epoch)
	var ds []*roomhub.Delivery
	for _, p := range ps {
		b := bounds[p]
		start := b.First
		if next, ok := from.Next(p); ok {
			start = max(next, b.First)
		}
		pos.Advance(p, start-1)
		// Twice the page, so later copies among the records (skipped) do
		// not shorten it.
		err := s.readPageRange(ctx, info, p, start, min(b.End, start+2*int64(limit)), dup, &ds, &skipped)
		if err != nil {
			return nil, "", err
		}
	}
	ds, left := roomhub.PageForward(ds, limit)
	// oldestLeft is, per partition, the oldest message read and left out
	// of the page.
	oldestLeft := map[int]int64{}
	for _, d := range left {
		if o, ok := oldestLeft[d.Msg.Partition]; !ok || d.Msg.Offset < o {
			oldestLeft[d.Msg.Partition] = d.Msg.Offset
		}
	}
	out := make([]protocol.MessageFrame, 0, len(ds))
	for _, d := range ds {
		pos.Advance(d.Msg.Partition, d.Msg.Offset)
		d.Cursor = pos.Clone()
		out = append(out, messageFrame(d))
	}
	// The position after the page passes the later copies skipped before
	// every message left out, so a page of nothing but copies still moves
	// on.
	for _, m := range skipped {
		if o, ok := oldestLeft[m.Partition]; !ok || m.Offset < o {
			pos.Advance(m.Partition, m.Offset)
		}
	}
	return out, pos.String(), nil
}

// offsetsAt is the position of the first message at or after t in every
// partition (the end where there is none).
func (s *Server) offsetsAt(ctx context.Context, info room.Info, t time.Time) (cursor.Cursor, error) {
	// Ends in a request of their own: kafka-go files a time query that
	// found nothing (offset and timestamp -1) as a last-offset answer.
	ps, bounds, err := s.roomBounds(ctx, info)
	if err != nil {
		return cursor.Cursor{}, err
	}
	n := len(ps)
	reqs := make([]kafka.OffsetRequest, n)
	for _, p := range ps {
		reqs[p] = kafka.TimeOffsetOf(p, t)
	}
	res, err := s.src.Cluster.Admin().ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{info.Topic: reqs}})
	if err != nil {
		return cursor.Cursor{}, err
	}
	next := make([]int64, n)
	for _, p := range ps {
		next[p] = bounds[p].End
	}
	for _, po := range res.Topics[info.Topic] {
		if po.Error != nil {
			return cursor.Cursor{}, po.Error
		}
		for off := range po.Offsets {
			if off >= 0 && po.Partition < n {
				next[po.Partition] = off
			}
		}
	}
	var c cursor.Cursor
	for p, o := range next {
		c.Advance(p, o-1)
	}
	return c, nil
}

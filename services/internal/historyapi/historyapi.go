// Package historyapi is the history service's wire format and its client:
// the one definition of the requests and answers that the history service
// serves and the gateway asks for (docs/history.md), and of the
// room-to-shard routing. It does not pull in the store.
package historyapi

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"palaver.dev/services/internal/cursor"
)

// Page sizes.
const (
	DefaultLimit = 50
	MaxLimit     = 200
)

// Errors of the API; test them with errors.Is.
var (
	// ErrBadRequest: the request is malformed (cursor, limit, time, query).
	ErrBadRequest = errors.New("history: bad request")
	// ErrNotServed: the replica does not serve this room (another shard's,
	// or not in the registry).
	ErrNotServed = errors.New("history: room not served by this shard")
	// ErrBehind: ingest has not reached the position asked for within the
	// wait, or the room is still being rebuilt.
	ErrBehind = errors.New("history: ingest has not reached the requested position")
	// ErrUnavailable: no replica of the room's shard answered.
	ErrUnavailable = errors.New("history: unavailable")
)

// Error codes in {"code":..., "message":...} bodies.
const (
	CodeBadRequest  = "bad_request"
	CodeNotFound    = "not_found"
	CodeBehind      = "behind"
	CodeUnavailable = "unavailable"
)

// Message is a stored message: the shape of the gateway's message frame
// (docs/protocol.md), plus the marked text of a search result.
type Message struct {
	Op        string    `json:"op"`
	Room      string    `json:"room"`
	ID        string    `json:"id"`
	Sender    Sender    `json:"sender"`
	Text      string    `json:"text"`
	Time      time.Time `json:"time"`
	Partition int       `json:"partition"`
	Offset    int64     `json:"offset"`
	Cursor    string    `json:"cursor"`
	// ClientTime is the sender's clock at the send, as it said; zero when
	// it did not say.
	ClientTime time.Time `json:"client_time,omitzero"`
	// Highlight is Text cut into segments, the words the search matched
	// marked; only in search results.
	Highlight []Segment `json:"highlight,omitempty"`
}

// Sender is who sent a message.
type Sender struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Segment is a piece of a search result's text; Mark is set on a word the
// query matched. A text's segments, joined, are the text.
type Segment struct {
	Text string `json:"text"`
	Mark bool   `json:"mark,omitempty"`
}

// Page is a page of messages, oldest first, with the cursors of the pages
// around it.
type Page struct {
	Messages []Message `json:"messages"`
	// Before is the cursor of the next older page; empty when nothing older
	// is stored.
	Before string `json:"before,omitempty"`
	// After is the position after the page, to ask for newer messages;
	// only on pages read forward (after, around).
	After string `json:"after,omitempty"`
}

// SearchPage is a page of search results, newest first.
type SearchPage struct {
	Results []Message `json:"results"`
	// Next continues the search with older results; empty at the end.
	Next string `json:"next,omitempty"`
}

// PageRequest asks for a page of a room: before a position (the newest
// messages when neither After nor Around is set and Before is zero), after
// a position (HasAfter; the zero cursor is the room's start), or around a
// time. Seen is a position the caller has seen (read-your-writes): the
// answer waits until ingest passed it.
type PageRequest struct {
	Before, After cursor.Cursor
	HasAfter      bool
	Around        time.Time
	Seen          cursor.Cursor
	Limit         int
}

// Kind names the request's direction: before, after or around.
func (r PageRequest) Kind() string {
	switch {
	case r.HasAfter:
		return "after"
	case !r.Around.IsZero():
		return "around"
	}
	return "before"
}

// SearchRequest asks for the messages of a room matching Query, newest
// first, optionally from one sender, continuing at Next.
type SearchRequest struct {
	Query, Sender, Next string
	Seen                cursor.Cursor
	Limit               int
}

// Limits on search requests.
const (
	MaxQueryBytes  = 256
	MaxSenderBytes = 128
	maxTokenBytes  = 64
)

// ParsePageRequest reads a page request's query parameters: at most one
// of before and after (cursors) and around (an RFC 3339 time); limit, 1 to
// 200 (default 50); seen, a cursor.
func ParsePageRequest(q url.Values) (PageRequest, error) {
	req := PageRequest{}
	var err error
	if req.Limit, err = parseLimit(q.Get("limit")); err != nil {
		return req, err
	}
	set := 0
	for _, k := range []string{"before", "after", "around"} {
		if q.Has(k) {
			set++
		}
	}
	if set > 1 {
		return req, fmt.Errorf("%w: give one of before, after and around", ErrBadRequest)
	}
	if req.Before, err = parseCursor(q.Get("before")); err != nil {
		return req, err
	}
	if req.After, err = parseCursor(q.Get("after")); err != nil {
		return req, err
	}
	req.HasAfter = q.Has("after")
	if req.Seen, err = parseCursor(q.Get("seen")); err != nil {
		return req, err
	}
	if q.Has("around") {
		t, err := time.Parse(time.RFC3339Nano, q.Get("around"))
		if err != nil || t.Year() < 1970 || t.Year() > 9999 {
			return req, fmt.Errorf("%w: around must be an RFC 3339 time", ErrBadRequest)
		}
		req.Around = t
	}
	return req, nil
}

// Values encodes the request as query parameters.
func (r PageRequest) Values() url.Values {
	v := url.Values{"limit": {strconv.Itoa(r.Limit)}}
	switch r.Kind() {
	case "after":
		v.Set("after", r.After.String())
	case "around":
		v.Set("around", r.Around.UTC().Format(time.RFC3339Nano))
	default:
		if !r.Before.IsZero() {
			v.Set("before", r.Before.String())
		}
	}
	if !r.Seen.IsZero() {
		v.Set("seen", r.Seen.String())
	}
	return v
}

// ParseSearchRequest reads a search request's query parameters: q (the
// words, at most 256 bytes), sender (a user id), next (the previous page's
// token), limit (1 to 200, default 50) and seen (a cursor).
func ParseSearchRequest(q url.Values) (SearchRequest, error) {
	req := SearchRequest{Query: q.Get("q"), Sender: q.Get("sender"), Next: q.Get("next")}
	var err error
	if req.Limit, err = parseLimit(q.Get("limit")); err != nil {
		return req, err
	}
	if req.Seen, err = parseCursor(q.Get("seen")); err != nil {
		return req, err
	}
	switch {
	case req.Query == "":
		return req, fmt.Errorf("%w: q is required", ErrBadRequest)
	case len(req.Query) > MaxQueryBytes:
		return req, fmt.Errorf("%w: q is longer than %d bytes", ErrBadRequest, MaxQueryBytes)
	case len(req.Sender) > MaxSenderBytes:
		return req, fmt.Errorf("%w: sender is longer than %d bytes", ErrBadRequest, MaxSenderBytes)
	case len(req.Next) > maxTokenBytes:
		return req, fmt.Errorf("%w: malformed next token", ErrBadRequest)
	}
	return req, nil
}

// Values encodes the request as query parameters.
func (r SearchRequest) Values() url.Values {
	v := url.Values{"q": {r.Query}, "limit": {strconv.Itoa(r.Limit)}}
	if r.Sender != "" {
		v.Set("sender", r.Sender)
	}
	if r.Next != "" {
		v.Set("next", r.Next)
	}
	if !r.Seen.IsZero() {
		v.Set("seen", r.Seen.String())
	}
	return v
}

func parseLimit(v string) (int, error) {
	if v == "" {
		return DefaultLimit, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxLimit {
		return 0, fmt.Errorf("%w: limit must be between 1 and %d", ErrBadRequest, MaxLimit)
	}
	return n, nil
}

func parseCursor(v string) (cursor.Cursor, error) {
	c, err := cursor.Parse(v)
	if err != nil {
		return c, fmt.Errorf("%w: malformed cursor", ErrBadRequest)
	}
	return c, nil
}

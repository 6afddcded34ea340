package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"palaver.dev/services/internal/cursor"
	"palaver.dev/services/internal/historyapi"
)

// The API's requests, defined once in historyapi.
type (
	PageRequest   = historyapi.PageRequest
	SearchRequest = historyapi.SearchRequest
)

// roomView is what a query needs of a served room, read under the lock.
type roomView struct {
	name      string
	tag       int64
	parts     int
	committed map[int]int64
	end       map[int]int64 // partitions fetched at least once
	st        *Store        // the store holding its rows
}

func (s *Service) view(name string) (roomView, <-chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.served[name]
	if !ok {
		return roomView{}, nil, fmt.Errorf("%w: %q", ErrNotServed, name)
	}
	v := roomView{name: name, tag: r.tag, parts: r.parts, committed: map[int]int64{}, end: map[int]int64{}, st: s.stores[s.storeOf(name)]}
	for p := range r.parts {
		k := posKey{name, p}
		v.committed[p] = s.committed[k]
		if e, ok := s.end[k]; ok {
			v.end[p] = e
		}
	}
	return v, s.progress, nil
}

// waitFor waits, at most MaxWait, until the room's committed positions
// reach target (partitions the room does not have are ignored), and
// returns the view then. ErrBehind when they do not.
func (s *Service) waitFor(ctx context.Context, name string, target func(roomView) map[int]int64) (roomView, error) {
	timer := time.NewTimer(s.cfg.MaxWait)
	defer timer.Stop()
	for {
		v, progress, err := s.view(name)
		if err != nil {
			return v, err
		}
		want := target(v)
		reached := want != nil
		for p, n := range want {
			if p < v.parts && v.committed[p] < n {
				reached = false
			}
		}
		if reached {
			return v, nil
		}
		select {
		case <-progress:
		case <-timer.C:
			return v, ErrBehind
		case <-ctx.Done():
			return v, ctx.Err()
		}
	}
}

func cursorNext(c cursor.Cursor) map[int]int64 {
	out := map[int]int64{}
	for _, p := range c.Partitions() {
		out[p], _ = c.Next(p)
	}
	return out
}

// caughtUpTarget is the target of queries without a position: every partition
// fetched once, and committed within ReadyLag of its end; then what was
// fetched (up to the end) is waited for.
func (s *Service) caughtUpTarget(v roomView) map[int]int64 {
	if len(v.end) < v.parts || v.st.Building() {
		return nil
	}
	for p, e := range v.end {
		if e-v.committed[p] > int64(s.cfg.ReadyLag) {
			return nil
		}
	}
	return v.end
}

// Messages answers a page request.
func (s *Service) Messages(ctx context.Context, name string, req PageRequest) (Page, error) {
	kind := req.Kind()
	began := time.Now()
	defer func() { s.m.QueryLatency.WithLabelValues(kind).Observe(time.Since(began).Seconds()) }()
	if req.Limit < 1 || req.Limit > historyapi.MaxLimit {
		return Page{}, fmt.Errorf("%w: limit must be between 1 and %d", ErrBadQuery, historyapi.MaxLimit)
	}
	v, err := s.waitFor(ctx, name, func(v roomView) map[int]int64 {
		want := s.caughtUpTarget(v)
		if want == nil {
			return nil
		}
		for _, c := range []cursor.Cursor{req.Seen, req.Before, req.After} {
			for p, n := range cursorNext(c) {
				want[p] = max(want[p], n)
			}
		}
		return want
	})
	if err != nil {
		return Page{}, err
	}
	switch kind {
	case "after":
		from := cursorNext(req.After)
		rows, err := v.st.after(ctx, v.tag, v.parts, from, req.Limit)
		if err != nil {
			return Page{}, err
		}
		page := Page{Messages: make([]Message, 0, len(rows))}
		page.After = s.fill(&page, v.name, from, rows, v.parts)
		return page, nil
	case "around":
		split, err := v.st.split(ctx, v.tag, v.parts, req.Around, v.committed)
		if err != nil {
			return Page{}, err
		}
		page, err := s.before(ctx, v, split, req.Limit/2)
		if err != nil {
			return Page{}, err
		}
		rows, err := v.st.after(ctx, v.tag, v.parts, split, req.Limit-len(page.Messages))
		if err != nil {
			return Page{}, err
		}
		page.After = s.fill(&page, v.name, split, rows, v.parts)
		return page, nil
	}
	bound := map[int]int64{}
	for p := range v.parts {
		bound[p] = v.committed[p]
		if n, ok := req.Before.Next(p); ok {
			bound[p] = n
		}
	}
	return s.before(ctx, v, bound, req.Limit)
}

// before is a page read backwards from bound.
func (s *Service) before(ctx context.Context, v roomView, bound map[int]int64, limit int) (Page, error) {
	page := Page{Messages: []Message{}}
	if limit == 0 { // only whether anything older exists, for the token
		rows, _, _, err := v.st.before(ctx, v.tag, v.parts, bound, 1)
		if err == nil && len(rows) > 0 {
			page.Before = cursorOf(bound).String()
		}
		return page, err
	}
	rows, start, older, err := v.st.before(ctx, v.tag, v.parts, bound, limit)
	if err != nil {
		return page, err
	}
	s.fill(&page, v.name, start, rows, v.parts)
	if older {
		page.Before = cursorOf(start).String()
	}
	return page, nil
}

// fill appends rows to the page with their cursors, from start on, and
// returns the position after the last.
func (s *Service) fill(page *Page, name string, start map[int]int64, rows []row, parts int) string {
	pos := cursorOf(start)
	for p := range parts {
		if _, ok := pos.Next(p); !ok {
			pos.Advance(p, -1)
		}
	}
	for i := range rows {
		pos.Advance(rows[i].partition, rows[i].offset)
		m := rows[i].message(name)
		m.Cursor = pos.String()
		page.Messages = append(page.Messages, m)
	}
	return pos.String()
}

// Search answers a search request.
func (s *Service) Search(ctx context.Context, name string, req SearchRequest) (SearchPage, error) {
	began := time.Now()
	defer func() { s.m.QueryLatency.WithLabelValues("search").Observe(time.Since(began).Seconds()) }()
	if req.Limit < 1 || req.Limit > historyapi.MaxLimit {
		return SearchPage{}, fmt.Errorf("%w: limit must be between 1 and %d", ErrBadQuery, historyapi.MaxLimit)
	}
	terms, err := parseQuery(req.Query)
	if err != nil {
		return SearchPage{}, err
	}
	var below *searchKey
	if req.Next != "" {
		k, err := parseSearchKey(req.Next)
		if err != nil {
			return SearchPage{}, err
		}
		below = &k
	}
	if len(req.Sender) > 128 {
		return SearchPage{}, fmt.Errorf("%w: sender id too long", ErrBadQuery)
	}
	v, err := s.waitFor(ctx, name, func(v roomView) map[int]int64 {
		want := s.caughtUpTarget(v)
		if want == nil {
			return nil
		}
		for p, n := range cursorNext(req.Seen) {
			want[p] = max(want[p], n)
		}
		return want
	})
	if err != nil {
		return SearchPage{}, err
	}
	rows, more, err := v.st.search(ctx, v.tag, v.parts, terms, req.Sender, below, req.Limit)
	if err != nil {
		return SearchPage{}, err
	}
	out := SearchPage{Results: make([]Message, 0, len(rows))}
	for i := range rows {
		m := rows[i].message(name)
		var c cursor.Cursor
		c.Advance(m.Partition, m.Offset)
		m.Cursor = c.String()
		m.Highlight = highlight(m.Text, terms)
		out.Results = append(out.Results, m)
	}
	if more {
		last := rows[len(rows)-1]
		out.Next = searchKey{last.ts, last.rid}.String()
	}
	return out, nil
}

// Handler serves the history API (internal: the gateway is its client and
// applies the users' authorization; docs/history.md):
//
//	GET /v1/rooms/{room}/messages?before=|after=|around=&limit=&seen=
//	GET /v1/rooms/{room}/search?q=&sender=&next=&limit=&seen=
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/rooms/{room}/messages", func(w http.ResponseWriter, r *http.Request) {
		req, err := historyapi.ParsePageRequest(r.URL.Query())
		if err == nil {
			var page Page
			if page, err = s.Messages(r.Context(), r.PathValue("room"), req); err == nil {
				writeJSON(w, http.StatusOK, page)
				return
			}
		}
		s.writeError(w, err)
	})
	mux.HandleFunc("GET /v1/rooms/{room}/search", func(w http.ResponseWriter, r *http.Request) {
		req, err := historyapi.ParseSearchRequest(r.URL.Query())
		if err == nil {
			var page SearchPage
			if page, err = s.Search(r.Context(), r.PathValue("room"), req); err == nil {
				writeJSON(w, http.StatusOK, page)
				return
			}
		}
		s.writeError(w, err)
	})
	return mux
}

func (s *Service) writeError(w http.ResponseWriter, err error) {
	code, status := historyapi.CodeUnavailable, http.StatusServiceUnavailable
	switch {
	case errors.Is(err, ErrBadQuery):
		code, status = historyapi.CodeBadRequest, http.StatusBadRequest
	case errors.Is(err, ErrNotServed):
		code, status = historyapi.CodeNotFound, http.StatusNotFound
	case errors.Is(err, ErrBehind):
		code = historyapi.CodeBehind
	default:
		s.log.Warn("history: query failed", "err", err)
	}
	writeJSON(w, status, apiError{Code: code, Message: err.Error()})
}

type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

package chatclient

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// SearchResult is a message that matched a search, with its text cut into
// segments, the matched words marked.
type SearchResult struct {
	Message
	Highlight []Segment `json:"highlight"`
}

// Segment is a piece of a search result's text; joined, a result's
// segments are its text.
type Segment struct {
	Text string `json:"text"`
	Mark bool   `json:"mark,omitempty"`
}

// SearchPage is a page of search results, newest first; Next continues
// with older ones ("" at the end).
type SearchPage struct {
	Results []SearchResult `json:"results"`
	Next    string         `json:"next"`
}

// Search asks for a room's messages matching query (GET
// /v1/rooms/{room}/search): every word, newest first, from sender if not
// empty, continuing at next if not empty.
func (a *API) Search(ctx context.Context, room, query, sender, next string, limit int) (SearchPage, error) {
	q := url.Values{"q": {query}}
	if sender != "" {
		q.Set("sender", sender)
	}
	if next != "" {
		q.Set("next", next)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out SearchPage
	if err := a.do(ctx, http.MethodGet, "/v1/rooms/"+url.PathEscape(room)+"/search?"+q.Encode(), nil, &out); err != nil {
		return SearchPage{}, fmt.Errorf("search %q: %w", room, err)
	}
	return out, nil
}

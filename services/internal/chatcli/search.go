package chatcli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"palaver.dev/services/internal/chatclient"
)

// SearchOptions configure Search.
type SearchOptions struct {
	Conn     Conn
	Room     string
	Query    string
	Sender   string // a user id; empty: everyone
	Limit    int    // most results printed (default 20)
	JSON     bool
	Out      io.Writer
	Location *time.Location // times are printed in it (default local)
}

// Search prints a room's messages matching the query, newest first, one
// a line like `palaver chat` prints messages, the matched words between
// asterisks; or, with JSON, the results as the gateway returns them.
func Search(ctx context.Context, o SearchOptions) error {
	if o.Room == "" || strings.TrimSpace(o.Query) == "" {
		return &UsageError{"search needs --room and a query"}
	}
	if o.Limit <= 0 {
		o.Limit = 20
	}
	if o.Location == nil {
		o.Location = time.Local
	}
	tok, err := o.Conn.Token(ctx)
	if err != nil {
		return reachable(err, o.Conn.URL)
	}
	api := &chatclient.API{BaseURL: o.Conn.URL, Token: tok}
	var results []chatclient.SearchResult
	next := ""
	for len(results) < o.Limit {
		page, err := api.Search(ctx, o.Room, o.Query, o.Sender, next, min(200, o.Limit-len(results)))
		if err != nil {
			return reachable(err, o.Conn.URL)
		}
		results = append(results, page.Results...)
		if next = page.Next; next == "" {
			break
		}
	}
	results = results[:min(len(results), o.Limit)]
	if o.JSON {
		if results == nil {
			results = []chatclient.SearchResult{}
		}
		enc := json.NewEncoder(o.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"results": results})
	}
	for _, r := range results {
		var text strings.Builder
		for _, s := range r.Highlight {
			if s.Mark {
				text.WriteString("*" + s.Text + "*")
			} else {
				text.WriteString(s.Text)
			}
		}
		if len(r.Highlight) == 0 {
			text.WriteString(r.Text)
		}
		name := r.Sender.Name
		if name == "" {
			name = r.Sender.ID
		}
		t := r.Time.In(o.Location)
		fmt.Fprintf(o.Out, "%s <%s> %s\n", t.Format("2006-01-02 15:04:05"), clean(name), cleanText(text.String()))
	}
	return nil
}

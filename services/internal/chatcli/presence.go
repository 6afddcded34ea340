package chatcli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"text/tabwriter"

	"palaver.dev/services/internal/chatclient"
	"palaver.dev/services/internal/message"
)

// presenceNotices prints the joins and leaves of a chat's room on its
// error stream: `palaver: Ada joined`, `palaver: Ada left`. The snapshot a
// (re)join brings is not printed, nor the user's own comings and goings.
type presenceNotices struct {
	room string
	say  func(format string, args ...any)
	mu   sync.Mutex
	self string
}

// connected records who the user is on a new connection.
func (p *presenceNotices) connected(c *chatclient.Client) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.self = c.Welcome().User.ID
	p.mu.Unlock()
}

func (p *presenceNotices) notice(pr chatclient.Presence) {
	if p == nil || pr.Room != p.room || !pr.Diff {
		return
	}
	p.mu.Lock()
	self := p.self
	p.mu.Unlock()
	for _, u := range pr.Joined {
		if u.ID != self {
			p.say("%s joined", clean(displayName(u)))
		}
	}
	for _, u := range pr.Left {
		if u.ID != self {
			p.say("%s left", clean(displayName(u)))
		}
	}
}

func displayName(u chatclient.User) string {
	if u.Name != "" {
		return u.Name
	}
	return u.ID
}

// WhoOptions configure Who.
type WhoOptions struct {
	Conn Conn
	Room string
	JSON bool
	Out  io.Writer
}

// Who prints who is online in a room, with who is typing, reading every
// page of GET /v1/rooms/{room}/presence.
func Who(ctx context.Context, o WhoOptions) error {
	if err := message.ValidateRoom(o.Room); err != nil {
		return &UsageError{fmt.Sprintf("--room: %v", err)}
	}
	tok, err := o.Conn.Token(ctx)
	if err != nil {
		return reachable(err, o.Conn.URL)
	}
	api := &chatclient.API{BaseURL: o.Conn.URL, Token: tok}
	var all chatclient.Online
	for after := ""; ; {
		page, err := api.Presence(ctx, o.Room, after, 1000)
		if err != nil {
			return reachable(err, o.Conn.URL)
		}
		if after == "" {
			all = page
		} else {
			all.Users = append(all.Users, page.Users...)
		}
		if page.Next == "" || len(page.Users) == 0 {
			break
		}
		after = page.Next
	}
	all.Next = ""
	if all.Users == nil {
		all.Users = []chatclient.User{}
	}
	if all.Typing == nil {
		all.Typing = []chatclient.User{}
	}
	if o.JSON {
		enc := json.NewEncoder(o.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(all)
	}
	typing := map[string]bool{}
	for _, u := range all.Typing {
		typing[u.ID] = true
	}
	tw := tabwriter.NewWriter(o.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%d online in %s\n", all.Count, clean(o.Room))
	if len(all.Users) > 0 {
		fmt.Fprintln(tw, "NAME\tID\t")
	}
	for _, u := range all.Users {
		note := ""
		if typing[u.ID] {
			note = "typing…"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", clean(displayName(u)), clean(u.ID), note)
	}
	return tw.Flush()
}

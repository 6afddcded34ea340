package chatcli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"palaver.dev/services/internal/chatclient"
)

// RoomsOptions configure Rooms.
type RoomsOptions struct {
	Conn Conn
	JSON bool
	Out  io.Writer
}

// Rooms prints the rooms the caller may join, as a table or as JSON.
func Rooms(ctx context.Context, o RoomsOptions) error {
	if err := o.Conn.resolve(); err != nil {
		return err
	}
	tok, err := o.Conn.Token(ctx)
	if err != nil {
		return o.Conn.explainLogin(ctx, err)
	}
	api := &chatclient.API{BaseURL: o.Conn.URL, Token: tok}
	rooms, err := api.Rooms(ctx)
	if err != nil {
		return o.Conn.explain(ctx, err)
	}
	if o.JSON {
		if rooms == nil {
			rooms = []chatclient.Room{}
		}
		enc := json.NewEncoder(o.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"rooms": rooms})
	}
	// The users online, when the gateway runs presence.
	online := slices.ContainsFunc(rooms, func(r chatclient.Room) bool { return r.Online != nil })
	tw := tabwriter.NewWriter(o.Out, 0, 4, 2, ' ', 0)
	if online {
		fmt.Fprintln(tw, "NAME\tDISPLAY NAME\tONLINE\tDESCRIPTION")
	} else {
		fmt.Fprintln(tw, "NAME\tDISPLAY NAME\tDESCRIPTION")
	}
	for _, r := range rooms {
		if online {
			n := 0
			if r.Online != nil {
				n = *r.Online
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", clean(r.Name), clean(r.DisplayName), n, clean(r.Description))
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", clean(r.Name), clean(r.DisplayName), clean(r.Description))
	}
	return tw.Flush()
}

package chatclient_test

import (
	"context"
	"fmt"

	"palaver.dev/services/internal/chatclient"
	"palaver.dev/services/internal/chatclient/fakegateway"
	"palaver.dev/services/internal/protocol"
)

// Join a room, send a message, and read it back; then resume from the
// cursor on a new connection, as a client does after a disconnect.
func Example() {
	gw := fakegateway.New() // stands in for `palaver dev` on http://127.0.0.1:8080
	defer gw.Close()
	ctx := context.Background()

	token, err := chatclient.DevLogin(ctx, gw.URL, "Ada")
	if err != nil {
		fmt.Println(err)
		return
	}
	c, err := chatclient.Dial(ctx, gw.URL, token, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := c.Join(ctx, "lobby", "", 50); err != nil {
		fmt.Println(err)
		return
	}
	ack, err := c.Send(ctx, "lobby", "c-1", "hello")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("stored at %d/%d\n", ack.Partition, ack.Offset)
	m := <-c.Messages()
	fmt.Printf("<%s> %s\n", m.Sender.Name, m.Text)
	resume := c.Cursor("lobby")
	c.Close()

	if _, err := chatclient.Dial(ctx, gw.URL, "forged", nil); chatclient.Code(err) == protocol.CodeUnauthorized {
		fmt.Println("a bad token is refused:", chatclient.Code(err))
	}

	c, err = chatclient.Dial(ctx, gw.URL, token, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	j, err := c.Join(ctx, "lobby", resume, 0)
	fmt.Println("recovering:", j.Recovering, err)
	// Output:
	// stored at 0/0
	// <Ada> hello
	// a bad token is refused: unauthorized
	// recovering: true <nil>
}

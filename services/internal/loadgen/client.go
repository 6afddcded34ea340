package loadgen

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"time"

	"palaver.dev/services/internal/chatclient"
	"palaver.dev/services/internal/protocol"
)

// Client is one protocol connection for the drivers that play many people
// in many rooms (Person, `palaver simulate`, `palaver bench`, the failure
// drills): the lean WebSocket client of Run, with hello done, commands
// written whole and every server frame decoded. Unlike chatclient.Client
// it hides nothing the server sends (a message delivered twice is read
// twice), which is what a checker needs. Write methods may be called from
// any goroutine; Read from one.
type Client struct {
	ws      *wsConn
	Welcome chatclient.Welcome
}

// Frame is any server frame, flattened.
type Frame struct{ protocol.ServerFrame }

// Err returns an error frame as a *chatclient.Error; nil for other ops.
func (f *Frame) Err() error {
	if f.Op != protocol.OpError {
		return nil
	}
	return &chatclient.Error{Code: f.Code, Message: f.Message, Room: f.Room}
}

// Dial connects to the gateway at url (http:// or https://) with token and
// says hello; ctx bounds both.
func Dial(ctx context.Context, url, token string, tlsConf *tls.Config) (*Client, error) {
	ws, err := dialWS(ctx, url, token, tlsConf)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = ws.nc.SetDeadline(dl)
	}
	c := &Client{ws: ws}
	m := &member{ws: ws}
	if err := m.call(helloCommand, protocol.OpWelcome, &c.Welcome); err != nil {
		ws.close()
		return nil, fmt.Errorf("hello: %w", err)
	}
	_ = ws.nc.SetDeadline(time.Time{})
	ws.writeTimeout = clientWriteTimeout
	return c, nil
}

// helloCommand is the hello of every connection: the token went with the
// upgrade.
var helloCommand = mustCommand(protocol.Command{Op: protocol.OpHello, Ref: "hello", Versions: []int{protocol.Version}})

func mustCommand(cmd protocol.Command) []byte {
	b, err := json.Marshal(cmd)
	if err != nil {
		panic("loadgen: encode a command: " + err.Error())
	}
	return b
}

// clientWriteTimeout bounds one command's write: a gateway that takes
// nothing for this long is as good as gone.
const clientWriteTimeout = 10 * time.Second

func (c *Client) write(cmd protocol.Command) error {
	b, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	return c.ws.writeText(b)
}

// Join asks to join room, resuming after cursor if it is not empty. The
// answer (joined or error) carries ref.
func (c *Client) Join(ref, room, cursor string) error {
	return c.write(protocol.Command{Op: protocol.OpJoin, Ref: ref, Room: room, Cursor: cursor})
}

// Leave asks to leave room.
func (c *Client) Leave(ref, room string) error {
	return c.write(protocol.Command{Op: protocol.OpLeave, Ref: ref, Room: room})
}

// Send asks to store text in room under the client message id, which is
// also the ref of its answer.
func (c *Client) Send(room, id, text string) error {
	return c.write(protocol.Command{Op: protocol.OpSend, Ref: id, Room: room, ID: id, Text: text})
}

// Typing tells room that the user is typing. A gateway without the command
// answers unknown_op.
func (c *Client) Typing(ref, room string) error {
	return c.write(protocol.Command{Op: protocol.OpTyping, Ref: ref, Room: room})
}

// Read returns the next server frame. A close from the gateway is a
// *chatclient.CloseError.
func (c *Client) Read() (Frame, error) {
	p, err := c.ws.next()
	if err != nil {
		return Frame{}, err
	}
	var f Frame
	if err := json.Unmarshal(p, &f); err != nil {
		return Frame{}, fmt.Errorf("a frame that is not JSON: %w", err)
	}
	return f, nil
}

// ReadLean returns the next server frame with only the fields a checker
// of deliveries reads (op, ref, room, id, partition, offset and an error's
// code), taken where they lie in the frame rather than decoded as JSON: a
// member of `palaver bench` reads thousands of frames a second on the
// machine being measured, and decoding each cost it more than reading it.
// The values read are never escaped (ids and room names, as the lean read
// path of Run assumes).
func (c *Client) ReadLean() (Frame, error) {
	p, err := c.ws.next()
	if err != nil {
		return Frame{}, err
	}
	return leanFrame(p), nil
}

// leanFrame is ReadLean's reading of frame p.
func leanFrame(p []byte) Frame {
	var f Frame
	switch {
	case isOp(p, opMessage):
		f.Op = protocol.OpMessage
	case isOp(p, opAck):
		f.Op = protocol.OpAck
		f.Ref = string(field(p, `"ref":"`))
	case isOp(p, opError):
		f.Op = protocol.OpError
		f.Ref = string(field(p, `"ref":"`))
		f.Code = string(field(p, `"code":"`))
		f.Room = string(field(p, `"room":"`))
		return f
	default:
		f.Op = string(field(p, `"op":"`))
		return f
	}
	// A message's room and id come before its sender and text; an ack's
	// partition and offset are its last integers, a message's are after
	// its text (intField reads from the end).
	f.Room = string(field(p, `"room":"`))
	f.ID = string(field(p, `"id":"`))
	part, _ := intField(p, `"partition":`)
	f.Partition = int(part)
	f.Offset, _ = intField(p, `"offset":`)
	return f
}

// Close says goodbye (1000) and closes the socket; a Read in progress
// returns an error.
func (c *Client) Close() { c.ws.close() }

// Abort closes the socket without a goodbye, as a lost network does.
func (c *Client) Abort() { _ = c.ws.nc.Close() }
